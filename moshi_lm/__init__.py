"""Moshi full-duplex speech LM over Mimi codec tokens.

Entry points: `load_lm` (official checkpoints, bf16 or int8), `LMModel` (teacher-forced
forward), `LMGen` (streaming generator), `LMConfig`.
"""

from .config import LMConfig
from .generate.lmgen import LMGen, LMGenState
from .loading import DEFAULT_REPO, load_lm
from .models.lm import LMModel, LMOutput, LMState

__version__ = "0.1.0"

__all__ = ["DEFAULT_REPO", "LMConfig", "LMGen", "LMGenState", "LMModel", "LMOutput", "LMState", "load_lm"]
