"""A training view of `MimiModel`: whole segments through the same modules, with gradients.

The inference model runs everything through its streaming state under `no_grad`. Training
calls the very same submodules on whole segments with a fresh state (exactly the causal
padding), so what is trained is what is later streamed; only the quantizer takes its
training path (`train_split_rvq`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..models.mimi import MimiModel
from .config import QuantizerTrainConfig
from .quantizer import train_split_rvq


@dataclass
class TrainForward:
    """One training forward pass.

    Attributes:
        recon: [B, 1, T] decoded audio.
        latent: [B, D, F] encoder latent at the frame rate, before quantization.
        semantic: [B, D, F] output of the semantic codebook alone (for distillation).
        commitment: scalar commitment loss.
        codes: [B, K, F] int64 codes.
        replaced: dead codes replaced during this pass.
        perplexity: [K] per-codebook perplexity of this batch.
    """

    recon: torch.Tensor
    latent: torch.Tensor
    semantic: torch.Tensor
    commitment: torch.Tensor
    codes: torch.Tensor
    replaced: int
    perplexity: torch.Tensor


class MimiTrainer(nn.Module):
    """Wraps a MimiModel for training; the wrapped model is what gets saved.

    Args:
        model: the codec to train (its buffers and parameters are updated in place).
        qcfg: quantizer training settings.
    """

    def __init__(self, model: MimiModel, qcfg: QuantizerTrainConfig) -> None:
        super().__init__()
        n_max = model.total_codebooks
        if qcfg.num_codebooks > n_max or qcfg.num_codebooks < model.config.quantizer.n_q_semantic:
            raise ValueError(f"quantizer.num_codebooks {qcfg.num_codebooks}: the model has "
                             f"{model.config.quantizer.n_q_semantic}..{n_max} codebooks")
        self.model = model
        self.qcfg = qcfg

    def encode_latent(self, wav: torch.Tensor) -> torch.Tensor:
        """Args:
            wav: [B, 1, T], T a multiple of the frame size.
        Returns:
            [B, D, T / frame_size] latent before quantization.
        """
        m = self.model
        B = wav.shape[0]
        emb = m.encoder(wav, m.encoder.init_state(B))
        emb = m.encoder_transformer(emb, m.encoder_transformer.init_state(B))
        return m.downsample(emb, m.downsample.init_state(B))

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Args:
            latent: [B, D, F] quantized (or not) latent.
        Returns:
            [B, 1, F * frame_size] audio.
        """
        m = self.model
        B = latent.shape[0]
        emb = m.upsample(latent, m.upsample.init_state(B))
        emb = m.decoder_transformer(emb, m.decoder_transformer.init_state(B))
        return m.decoder(emb, m.decoder.init_state(B))

    def forward(self, wav: torch.Tensor, n_q: int, skip: torch.Tensor, gen: torch.Generator,
                check_dead: bool = False, update: bool = True) -> TrainForward:  # type: ignore[override]
        """Encode, quantize (training path), decode.

        Args:
            wav: [B, 1, T] audio, T a multiple of the frame size.
            n_q: codebooks to use this pass.
            skip: [B] bool, items that bypass quantization.
            gen: random generator for the quantizer.
            check_dead: replace dead codes in this pass.
            update: update the codebooks (False for evaluation passes).
        """
        fs = self.model.frame_size
        if wav.dim() != 3 or wav.shape[1] != 1 or wav.shape[-1] % fs or wav.shape[-1] == 0:
            raise ValueError(f"wav shape {tuple(wav.shape)}: expected [B, 1, T] with T a positive "
                             f"multiple of {fs}")
        latent = self.encode_latent(wav)
        q = train_split_rvq(self.model.quantizer, latent, n_q, skip, self.qcfg, gen, check_dead, update)
        recon = self.decode_latent(q.quantized)
        return TrainForward(recon, latent, q.semantic, q.commitment, q.codes, q.replaced, q.perplexity)
