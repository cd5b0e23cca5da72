"""Moshi full-duplex speech LM over Mimi codec tokens.

Entry points: `load_lm` (official checkpoints, bf16 or int8), `LMModel` (teacher-forced
forward), `LMGen` (streaming generator), `LMConfig`, `TextTokenizer`, `load_moshi` (LM + Mimi
+ tokenizer) and `DuplexPipeline` / `converse` (user audio in, reply audio and text out).
"""

from .bundle import MoshiModels, load_moshi
from .config import LMConfig
from .generate.lmgen import LMGen, LMGenState
from .generate.pipeline import Conversation, DuplexFrame, DuplexPipeline, converse
from .loading import DEFAULT_REPO, load_lm
from .models.lm import LMModel, LMOutput, LMState
from .tokenizer import TextTokenizer

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_REPO", "Conversation", "DuplexFrame", "DuplexPipeline", "LMConfig", "LMGen", "LMGenState",
    "LMModel", "LMOutput", "LMState", "MoshiModels", "TextTokenizer", "converse", "load_lm", "load_moshi",
]
