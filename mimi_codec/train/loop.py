"""The training loop: one step = a batch, a discriminator update, a generator update, EMAs.

Everything random in a step is drawn from generators seeded by (seed, step), and the
checkpoint holds every tensor the next step reads (model, EMA, discriminator, both AdamW
states, the balancer), so a run resumed from a checkpoint continues bit-exactly.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from ..checkpoint import save_mimi
from ..config import MimiConfig
from ..loaders import load_mimi
from ..models.mimi import MimiModel
from .config import TrainConfig
from .data import SegmentDataset
from .discriminator import MultiScaleSTFTDiscriminator, discriminator_loss, generator_losses
from .losses import Balancer, MultiScaleMelLoss
from .model import MimiTrainer
from .state import flatten_optimizer, load_checkpoint, save_checkpoint, unflatten_optimizer

CHECKPOINT_NAME = "checkpoint.safetensors"
MODEL_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"


class SemanticTeacher(Protocol):
    """A user-supplied teacher for semantic distillation (e.g. WavLM features).

    Attributes:
        dim: feature width D_t.
    """

    dim: int

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        """wav: [B, 1, T] 24 kHz audio -> features [B, D_t, T'] (any rate; resampled in time)."""
        ...


def build_model(cfg: TrainConfig) -> MimiModel:
    """The model a run starts from: `init_weights` loaded strictly, or a seeded random init."""
    mcfg = MimiConfig.load(cfg.model)
    if cfg.init_weights is not None:
        return load_mimi(cfg.init_weights, mcfg, num_codebooks=cfg.quantizer.num_codebooks)
    torch.manual_seed(cfg.seed)
    return MimiModel(mcfg, num_codebooks=cfg.quantizer.num_codebooks)


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2 ** 63))


@dataclass
class StepMetrics:
    """Losses and statistics of one step (floats)."""

    values: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Trains (or fine-tunes) a Mimi model.

    Args:
        cfg: the run's settings.
        data: sources (folders, files, manifests) or a ready SegmentDataset.
        out_dir: where checkpoints, the exported model and the metrics log go.
        device: torch device.
        teacher: optional semantic teacher (used when cfg.loss.semantic > 0).
    """

    def __init__(self, cfg: TrainConfig, data: list[str | Path] | SegmentDataset, out_dir: str | Path,
                 device: str | torch.device = "cpu", teacher: SemanticTeacher | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.device = torch.device(device)
        self.model = build_model(cfg).to(self.device).train()
        self.data = data if isinstance(data, SegmentDataset) else SegmentDataset(
            data, cfg.data, cfg.seed, frame_size=self.model.frame_size)
        self.net = MimiTrainer(self.model, cfg.quantizer)
        lc = cfg.loss
        self.mel_loss = MultiScaleMelLoss(lc.mel_ffts, self.model.sample_rate, lc.mel_linear).to(self.device)
        self.use_disc = lc.adversarial > 0 or lc.feature > 0
        self.disc = MultiScaleSTFTDiscriminator(lc.disc_ffts, lc.disc_filters).to(self.device) if self.use_disc else None
        self.teacher = teacher if lc.semantic > 0 else None
        if lc.semantic > 0 and teacher is None:
            raise ValueError("loss.semantic > 0 needs a teacher (Trainer(..., teacher=...))")
        self.semantic_proj = (nn.Conv1d(self.model.config.seanet.dimension, teacher.dim, 1).to(self.device)
                              if self.teacher is not None else None)
        self.balancer = Balancer({"mel": lc.mel, "waveform": lc.waveform, "adversarial": lc.adversarial,
                                  "feature": lc.feature}).to(self.device)
        oc = cfg.optim
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            in_tr = name.startswith(("encoder_transformer.", "decoder_transformer."))
            (decay if in_tr and p.dim() >= 2 else no_decay).append(p)
        if self.semantic_proj is not None:
            no_decay += list(self.semantic_proj.parameters())
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": oc.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=oc.lr, betas=oc.betas)
        self.disc_opt = (torch.optim.AdamW(self.disc.parameters(), lr=oc.disc_lr, betas=oc.betas)
                         if self.disc is not None else None)
        self.ema = {k: p.detach().clone() for k, p in self.model.named_parameters()}
        self.step = 0

    # ---------------------------------------------------------------- one step
    def _lr_scale(self, step: int) -> float:
        w = self.cfg.optim.warmup_steps
        return min(1.0, (step + 1) / w) if w > 0 else 1.0

    def train_step(self) -> StepMetrics:
        """Run step `self.step` and advance it."""
        cfg, step = self.cfg, self.step
        qc, lc = cfg.quantizer, cfg.loss
        wav = self.data.batch(step).to(self.device)
        gen = _step_generator(cfg.seed, step)
        n_sem = self.model.config.quantizer.n_q_semantic
        n_q = (int(torch.randint(n_sem, qc.num_codebooks + 1, (1,), generator=gen))
               if qc.quantizer_dropout else qc.num_codebooks)
        skip = torch.rand(wav.shape[0], generator=gen) < qc.skip_quantization
        check_dead = step % qc.dead_check_every == 0
        out = self.net(wav, n_q, skip, gen, check_dead=check_dead)
        recon = out.recon
        m: dict[str, float] = {}
        losses = {"mel": self.mel_loss(recon, wav), "waveform": F.l1_loss(recon, wav)}
        if self.disc is not None and step >= lc.adversarial_start:
            assert self.disc_opt is not None
            d_loss = discriminator_loss(self.disc, recon.detach(), wav)
            self.disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.disc_opt.step()
            m["disc"] = float(d_loss.detach())
            self.disc.requires_grad_(False)
            losses["adversarial"], losses["feature"] = generator_losses(self.disc, recon, wav)
            self.disc.requires_grad_(True)
        aux = qc.commitment_weight * out.commitment
        if self.teacher is not None:
            assert self.semantic_proj is not None
            with torch.no_grad():
                target = self.teacher(wav).to(recon)
            pred = self.semantic_proj(out.semantic)
            target = F.interpolate(target, size=pred.shape[-1], mode="linear", align_corners=False)
            sem = 1 - F.cosine_similarity(pred, target, dim=1).mean()
            aux = aux + lc.semantic * sem
            m["semantic"] = float(sem.detach())
        for g in self.opt.param_groups:
            g["lr"] = cfg.optim.lr * self._lr_scale(step)
        self.opt.zero_grad(set_to_none=True)
        if lc.balancer:
            self.balancer.backward(losses, recon, aux)
        else:
            weights = {"mel": lc.mel, "waveform": lc.waveform, "adversarial": lc.adversarial, "feature": lc.feature}
            total = sum(weights[k] * v for k, v in losses.items()) + aux
            total.backward()
        if cfg.optim.grad_clip > 0:
            m["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip))
        self.opt.step()
        self._update_ema()
        self.step += 1
        for k, v in losses.items():
            m[k] = float(v.detach())
        m["commitment"] = float(out.commitment.detach())
        m["replaced"] = float(out.replaced)
        m["perplexity"] = float(out.perplexity.mean())
        m["n_q"] = float(n_q)
        if not all(math.isfinite(v) for v in m.values()):
            raise FloatingPointError(f"step {step}: non-finite loss {m}")
        return StepMetrics(m)

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = self.cfg.optim.ema_decay
        for k, p in self.model.named_parameters():
            self.ema[k].mul_(d).add_(p.detach(), alpha=1 - d)

    # ----------------------------------------------------------- checkpoints
    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Every tensor of the training state, and the JSON rest."""
        t: dict[str, torch.Tensor] = {}
        t.update({f"model.{k}": v for k, v in self.model.state_dict().items()})
        t.update({f"ema.{k}": v for k, v in self.ema.items()})
        t.update({f"balancer.{k}": v for k, v in self.balancer.state_dict().items()})
        meta: dict[str, Any] = {"step": self.step, "train_config": self.cfg.to_dict(),
                                "model_config": self.model.config.to_dict()}
        ot, om = flatten_optimizer(self.opt, "optim.gen")
        t.update(ot)
        meta["optim.gen"] = om
        if self.disc is not None and self.disc_opt is not None:
            t.update({f"disc.{k}": v for k, v in self.disc.state_dict().items()})
            dt, dm = flatten_optimizer(self.disc_opt, "optim.disc")
            t.update(dt)
            meta["optim.disc"] = dm
        if self.semantic_proj is not None:
            t.update({f"semantic_proj.{k}": v for k, v in self.semantic_proj.state_dict().items()})
        return t, meta

    def load_state(self, path: str | Path) -> None:
        """Resume from a checkpoint written by `save`.

        Raises:
            ValueError: the checkpoint is of another model architecture.
        """
        t, meta = load_checkpoint(path)
        if meta["model_config"] != self.model.config.to_dict():
            raise ValueError(f"checkpoint {path} is of another model architecture than the config's")

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)}

        self.model.load_state_dict(part("model."), strict=True)
        ema = part("ema.")
        if set(ema) != set(self.ema):
            raise ValueError(f"checkpoint {path}: EMA tensors do not match the model")
        for k, v in ema.items():
            self.ema[k].copy_(v)
        self.balancer.load_state_dict(part("balancer."), strict=True)
        unflatten_optimizer(self.opt, "optim.gen", t, meta["optim.gen"])
        if self.disc is not None and self.disc_opt is not None:
            if "optim.disc" not in meta:
                raise ValueError(f"checkpoint {path} has no discriminator, the config uses one")
            self.disc.load_state_dict(part("disc."), strict=True)
            unflatten_optimizer(self.disc_opt, "optim.disc", t, meta["optim.disc"])
        if self.semantic_proj is not None:
            self.semantic_proj.load_state_dict(part("semantic_proj."), strict=True)
        self.step = int(meta["step"])

    def export_model(self) -> MimiModel:
        """A copy of the model for inference: EMA weights (unless export_ema is off) and the
        current codebooks, in eval mode."""
        export = MimiModel(self.model.config, num_codebooks=self.cfg.quantizer.num_codebooks)
        sd = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.cfg.export_ema:
            sd.update({k: v.detach().clone() for k, v in self.ema.items()})
        export.load_state_dict(sd, strict=True)
        return export.eval()

    def save(self) -> None:
        """Write the checkpoint, the exported model (official layout) and its config JSON."""
        self.out.mkdir(parents=True, exist_ok=True)
        t, meta = self.state_tensors()
        save_checkpoint(self.out / CHECKPOINT_NAME, t, meta)
        model = self.export_model()
        tmp = self.out / (MODEL_NAME + ".tmp")
        save_mimi(model, tmp)
        tmp.replace(self.out / MODEL_NAME)
        (self.out / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n", encoding="utf-8")
        if self.cfg.snapshots:
            (self.out / "snapshots").mkdir(exist_ok=True)
            save_mimi(model, self.out / "snapshots" / f"model_step{self.step:07d}.safetensors")

    # ------------------------------------------------------------------ loop
    def run(self, callback: Callable[[int, dict[str, float]], None] | None = None,
            max_steps: int | None = None) -> None:
        """Train up to `cfg.steps` (or `max_steps` more steps), logging and checkpointing.

        Args:
            callback: called after every step with (step, that step's metrics).
            max_steps: stop after this many steps of this call (None: run to cfg.steps).
        """
        self.out.mkdir(parents=True, exist_ok=True)
        cfg = self.cfg
        end = cfg.steps if max_steps is None else min(cfg.steps, self.step + max_steps)
        acc: dict[str, float] = {}
        n_acc = 0
        t0 = last_ckpt = time.monotonic()
        t_log = t0
        seg_seconds = self.data.segment / self.model.sample_rate * cfg.data.batch_size
        while self.step < end:
            m = self.train_step().values
            for k, v in m.items():
                acc[k] = acc.get(k, 0.0) + v
            n_acc += 1
            if callback is not None:
                callback(self.step, m)
            if self.step % cfg.log_every == 0 or self.step == end:
                now = time.monotonic()
                line = {"step": self.step, "time": round(time.time(), 3)}
                line.update({k: v / n_acc for k, v in acc.items()})
                line["steps_per_s"] = n_acc / max(now - t_log, 1e-9)
                line["audio_s_per_s"] = line["steps_per_s"] * seg_seconds
                with open(self.out / METRICS_NAME, "a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")
                acc, n_acc, t_log = {}, 0, now
            due_time = cfg.checkpoint_minutes > 0 and time.monotonic() - last_ckpt >= cfg.checkpoint_minutes * 60
            if self.step % cfg.checkpoint_every == 0 or self.step == end or due_time:
                self.save()
                last_ckpt = time.monotonic()
