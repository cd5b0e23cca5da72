"""`load_moshi`: the LM, the Mimi codec and the text tokenizer of one Moshi release, together."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import LMConfig, as_config
from .generate.lmgen import LMGen
from .generate.pipeline import DuplexPipeline
from .loading import DEFAULT_REPO, hf_download, load_lm_file, resolve_repo_files
from .models.lm import LMModel
from .tokenizer import TextTokenizer

PathLike = str | os.PathLike[str]


@dataclass
class MoshiModels:
    """Everything a dialogue needs.

    lm: the Moshi LM.
    mimi: the Mimi codec (`mimi_codec.MimiModel`), set to the LM's number of codebooks.
    tokenizer: the text tokenizer.
    lm_gen_config: default generation settings from the repository's config.json (may be empty).
    """

    lm: LMModel
    mimi: Any
    tokenizer: TextTokenizer
    lm_gen_config: dict[str, Any] = field(default_factory=dict)

    def generator(self, **kwargs: Any) -> LMGen:
        """An `LMGen` over the LM; kwargs override the repository defaults (temp, top_k, seed, ...)."""
        allowed = {"use_sampling", "temp", "temp_text", "top_k", "top_k_text", "seed"}
        settings = {k: v for k, v in self.lm_gen_config.items() if k in allowed}
        settings.update(kwargs)
        return LMGen(self.lm, **settings)

    def pipeline(self, **kwargs: Any) -> DuplexPipeline:
        """A `DuplexPipeline` (codec + generator + tokenizer); kwargs go to `generator`."""
        return DuplexPipeline(self.generator(**kwargs), self.mimi, self.tokenizer)


def load_moshi(hf_repo: str = DEFAULT_REPO, lm_weights: PathLike | None = None,
               lm_config: LMConfig | dict[str, Any] | PathLike | None = None,
               mimi_weights: PathLike | None = None, mimi_config: Any = None,
               tokenizer: PathLike | None = None, device: torch.device | str = "cpu",
               dtype: torch.dtype | None = None) -> MoshiModels:
    """Load the LM, Mimi and the tokenizer, from local files or the Hugging Face repository.

    Files not given are fetched from `hf_repo`, honoring its `config.json` (file names, LM
    config, generation defaults) when it has one; with all three files given the hub is not
    contacted.

    Args:
        hf_repo: repository for anything not given locally.
        lm_weights: LM `.safetensors` (bf16/fp32, or int8 `*.q8.safetensors`).
        lm_config: LM config (object, dict or JSON path); None = the repository's, else Moshi 7B.
        mimi_weights: Mimi `.safetensors`.
        mimi_config: Mimi config accepted by `mimi_codec.load_mimi` (None = official).
        tokenizer: SentencePiece `.model`.
        device: device of both models.
        dtype: LM float dtype (None keeps the checkpoint's); Mimi stays float32.
    """
    from mimi_codec import load_mimi

    repo_lm: dict[str, Any] | None = None
    gen_config: dict[str, Any] = {}
    files: dict[str, Any] = {}
    if lm_weights is None or mimi_weights is None or tokenizer is None:
        repo_lm, files = resolve_repo_files(hf_repo)
        gen_config = dict(files.get("lm_gen_config") or {})
        if mimi_config is None and "mimi_config_name" in files:
            mimi_config = hf_download(hf_repo, files["mimi_config_name"])
    config = as_config(lm_config if lm_config is not None else repo_lm)
    lm_path = Path(lm_weights) if lm_weights is not None else hf_download(hf_repo, files["moshi_name"])
    if not lm_path.is_file():
        raise FileNotFoundError(f"LM weights {lm_path} not found")
    lm = load_lm_file(lm_path, config, device=device, dtype=dtype)
    mimi_path = Path(mimi_weights) if mimi_weights is not None else hf_download(hf_repo, files["mimi_name"])
    if not mimi_path.is_file():
        raise FileNotFoundError(f"Mimi weights {mimi_path} not found")
    num_codebooks = max(config.dep_q, config.num_user_codebooks)
    mimi = load_mimi(weights=mimi_path, config=mimi_config, device=device, num_codebooks=num_codebooks)
    tok_path = Path(tokenizer) if tokenizer is not None else hf_download(hf_repo, files["tokenizer_name"])
    text_tokenizer = TextTokenizer(tok_path)
    if text_tokenizer.vocab_size < config.text_card:
        raise ValueError(f"tokenizer {tok_path} has {text_tokenizer.vocab_size} pieces, the LM expects "
                         f"text_card {config.text_card}")
    return MoshiModels(lm, mimi, text_tokenizer, gen_config)
