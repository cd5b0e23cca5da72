"""Reconstruction losses (multi-scale mel L1, waveform L1) and the loss balancer.

The balancer (as in EnCodec) makes each loss's weight its share of the gradient that
reaches the decoded waveform: every loss's gradient on the output is rescaled to
`weight / sum(weights) * total_norm / ema(its own norm)`, so the weights do not depend on
the losses' scales.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, fmin: float = 0.0,
                   fmax: float | None = None) -> torch.Tensor:
    """Triangular HTK-mel filters.

    Args:
        n_fft: FFT size (n_fft // 2 + 1 bins).
        n_mels: number of filters.
        sample_rate: Hz.
        fmin, fmax: frequency range in Hz (fmax None: Nyquist).
    Returns:
        [n_mels, n_fft // 2 + 1] filters.
    """
    fmax = sample_rate / 2 if fmax is None else fmax

    def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(fmin))),
                                     float(hz_to_mel(torch.tensor(fmax))), n_mels + 2, dtype=torch.float64))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo).clamp(min=1e-9)
    down = (hi - freqs[None]) / (hi - mid).clamp(min=1e-9)
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


class MelSpectrogram(nn.Module):
    """Power mel spectrogram of [B, 1, T] audio at one scale (hop n_fft / 4, Hann window)."""

    def __init__(self, n_fft: int, n_mels: int, sample_rate: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop = n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fb", mel_filterbank(n_fft, n_mels, sample_rate), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav: [B, 1, T] -> [B, n_mels, frames]"""
        spec = torch.stft(wav.squeeze(1), self.n_fft, self.hop, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True)
        return torch.matmul(self.fb, spec.abs().pow(2))


class MultiScaleMelLoss(nn.Module):
    """Sum over scales of linear_weight * L1(mel) + L1(log mel), averaged over scales.

    Args:
        ffts: FFT sizes; each uses min(80, n_fft // 8) mel bands, at least 8.
        sample_rate: Hz.
        linear_weight: weight of the L1 of the mel power (0: log-mel only).
    """

    def __init__(self, ffts: tuple[int, ...], sample_rate: int, linear_weight: float = 1.0) -> None:
        super().__init__()
        self.linear_weight = linear_weight
        self.scales = nn.ModuleList([MelSpectrogram(n, max(8, min(80, n // 8)), sample_rate) for n in ffts])

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """fake, real: [B, 1, T] -> scalar loss."""
        total = fake.new_zeros(())
        for mel in self.scales:
            a, b = mel(fake), mel(real)
            total = total + F.l1_loss(torch.log(a + 1e-5), torch.log(b + 1e-5))
            if self.linear_weight:
                total = total + self.linear_weight * F.l1_loss(a, b)
        return total / len(self.scales)


def mel_distance(fake: torch.Tensor, real: torch.Tensor, sample_rate: int = 24000) -> float:
    """The evaluation mel distance: mean L1 of log10 mel spectra over FFT sizes 512, 1024, 2048.

    Args:
        fake, real: [T] or [B, 1, T] audio of the same length.
    """
    fake = fake.reshape(1, 1, -1).float()
    real = real.reshape(1, 1, -1).float()
    dist = 0.0
    for n in (512, 1024, 2048):
        mel = MelSpectrogram(n, 80, sample_rate)
        dist += float(F.l1_loss(torch.log10(mel(fake) + 1e-5), torch.log10(mel(real) + 1e-5)))
    return dist / 3


class Balancer(nn.Module):
    """Gradient balancer over losses that all depend on one output tensor.

    Args:
        weights: name -> weight (share of the gradient on the output).
        ema_decay: decay of the running gradient-norm average.
    """

    def __init__(self, weights: dict[str, float], ema_decay: float = 0.999) -> None:
        super().__init__()
        self.weights = {k: float(v) for k, v in weights.items() if v > 0}
        self.ema_decay = ema_decay
        self.register_buffer("norms", torch.zeros(len(self.weights)))
        self.register_buffer("fix", torch.zeros(len(self.weights)))  # bias correction of the EMA

    def backward(self, losses: dict[str, torch.Tensor], output: torch.Tensor,
                 extra: torch.Tensor | None = None) -> dict[str, float]:
        """Backpropagate the balanced sum of `losses` through `output` (and the graph behind it).

        Args:
            losses: name -> scalar loss; names without a weight are ignored.
            output: the tensor all losses depend on ([B, 1, T] decoded audio).
            extra: a scalar loss backpropagated as it is in the same pass (e.g. commitment).
        Returns:
            name -> norm of that loss's gradient on the output (before balancing).
        """
        names = [k for k in self.weights if k in losses]
        grads, norms = {}, {}
        for i, k in enumerate(self.weights):
            if k not in losses:
                continue
            (g,) = torch.autograd.grad(losses[k], output, retain_graph=True)
            n = g.flatten(1).norm(dim=1).mean()  # per batch item, averaged (as EnCodec)
            grads[k] = g
            norms[k] = float(n)
            with torch.no_grad():
                self.norms[i] = self.ema_decay * self.norms[i] + (1 - self.ema_decay) * n
                self.fix[i] = self.ema_decay * self.fix[i] + (1 - self.ema_decay)
        total_w = sum(self.weights[k] for k in names)
        total = torch.zeros_like(output)
        for i, k in enumerate(self.weights):
            if k not in grads:
                continue
            avg = self.norms[i] / self.fix[i].clamp(min=1e-12)
            # each loss's gradient on the output gets a norm of weight / sum(weights)
            total = total + grads[k] * (self.weights[k] / total_w / (avg + 1e-12))
        if extra is not None and extra.requires_grad:
            torch.autograd.backward([output, extra], [total, torch.ones_like(extra)])
        else:
            output.backward(total)
        return norms
