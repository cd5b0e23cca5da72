"""Multi-scale STFT discriminator (as in EnCodec) with hinge losses and feature matching.

Each scale looks at the complex STFT (real and imaginary parts as two channels) through a
stack of 2-d convolutions dilated in time and strided in frequency, and returns a logit map
plus its intermediate feature maps.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class STFTDiscriminator(nn.Module):
    """One scale: [B, 1, T] audio -> (logits [B, 1, frames, bins'], feature maps).

    Args:
        n_fft: FFT size (hop n_fft // 4, Hann window).
        filters: channels of the convolutions.
    """

    def __init__(self, n_fft: int, filters: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [nn.Conv2d(2, filters, (3, 9), padding=(1, 4))]
        for dilation in (1, 2, 4):
            layers.append(nn.Conv2d(filters, filters, (3, 9), stride=(1, 2),
                                    dilation=(dilation, 1), padding=(dilation, 4)))
        layers.append(nn.Conv2d(filters, filters, (3, 3), padding=(1, 1)))
        self.convs = nn.ModuleList(layers)
        self.post = nn.Conv2d(filters, 1, (3, 3), padding=(1, 1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """wav: [B, 1, T] -> logits [B, 1, F, T'] and the feature maps of every conv."""
        spec = torch.stft(wav.squeeze(1), self.n_fft, self.n_fft // 4, window=self.window,
                          center=True, normalized=True, return_complex=True)
        x = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [B, 2, frames, bins]
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return self.post(x), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    """Several STFT discriminators at different FFT sizes.

    Args:
        ffts: FFT sizes, one discriminator each.
        filters: channels of each.
    """

    def __init__(self, ffts: tuple[int, ...] = (2048, 1024, 512), filters: int = 32) -> None:
        super().__init__()
        self.discs = nn.ModuleList([STFTDiscriminator(n, filters) for n in ffts])

    def forward(self, wav: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """wav: [B, 1, T] -> per scale (logits, feature maps)."""
        return [d(wav) for d in self.discs]


def discriminator_loss(disc: MultiScaleSTFTDiscriminator, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator: mean(relu(1 - D(real))) + mean(relu(1 + D(fake))).

    Args:
        fake: [B, 1, T] decoded audio (detached by the caller).
        real: [B, 1, T] input audio.
    """
    loss = fake.new_zeros(())
    for (lf, _), (lr, _) in zip(disc(fake), disc(real)):
        loss = loss + F.relu(1 - lr).mean() + F.relu(1 + lf).mean()
    return loss / len(disc.discs)


def generator_losses(disc: MultiScaleSTFTDiscriminator, fake: torch.Tensor, real: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generator hinge loss mean(relu(1 - D(fake))) and relative feature matching
    mean |f(fake) - f(real)| / mean |f(real)|, both averaged over scales.

    Args:
        fake: [B, 1, T] decoded audio (with gradient).
        real: [B, 1, T] input audio.
    Returns:
        (adversarial, feature) scalar losses.
    """
    adv = fake.new_zeros(())
    feat = fake.new_zeros(())
    with torch.no_grad():
        real_out = disc(real)
    for (lf, ff), (_, fr) in zip(disc(fake), real_out):
        adv = adv + F.relu(1 - lf).mean()
        scale_feat = fake.new_zeros(())
        for a, b in zip(ff, fr):
            scale_feat = scale_feat + F.l1_loss(a, b) / (b.abs().mean() + 1e-8)
        feat = feat + scale_feat / len(ff)
    n = len(disc.discs)
    return adv / n, feat / n
