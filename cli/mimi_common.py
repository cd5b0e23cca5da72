"""Pieces the `mimi` commands share: model options and loading, the weights' name, progress,
and chunked encode/decode that report progress while computing exactly what
`model.encode` / `model.decode` compute (the same chunks through the same streaming state)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

if TYPE_CHECKING:  # the model (and torch) load only when a command needs them
    from mimi_codec import MimiModel

#: What the `model` header field says for the official checkpoint.
OFFICIAL_MODEL_ID = "kyutai/moshiko-pytorch-bf16:tokenizer-e351c8d8-checkpoint125"


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --model, --weights, --config and --device to a command (`model_name`, `weights`, ...)."""
    func = click.option(
        "--device", default="cpu", show_default=True, help="Torch device to run the model on (cpu, cuda, cuda:1, ...)."
    )(func)
    func = click.option(
        "--config",
        "config",
        default=None,
        metavar="FILE|PRESET",
        help="Model config: a JSON file in the official schema or a preset name (default: the official Mimi).",
    )(func)
    func = click.option(
        "--weights",
        default=None,
        type=click.Path(dir_okay=False),
        metavar="FILE",
        help="Local safetensors checkpoint (default: the official one from Hugging Face).",
    )(func)
    func = click.option(
        "--model",
        "model_name",
        default=None,
        metavar="NAME",
        help="A model shipped in the package, e.g. small (offline; not with --weights/--config).",
    )(func)
    return func


decoder_precision_option = click.option(
    "--decoder-precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
    help="fp16: the decoder's convolutions read float16 weights (x86-64 CPUs): faster "
         "streamed decoding, audio within ~1e-3 of fp32; the codes never change.",
)


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --force and --quiet to a command."""
    func = click.option("--quiet", is_flag=True, help="No progress bar and no summary lines.")(func)
    func = click.option("--force", is_flag=True, help="Overwrite output files that exist.")(func)
    return func


def model_id(weights: str | None, model_name: str | None = None) -> str:
    """The `model` header value for a weights choice: the official id, a shipped model's id
    ("mimi-codec:small"), or "name@sha256:hash12" for a local file."""
    if model_name is not None:
        from mimi_codec.named_models import named_model

        return named_model(model_name).model_id
    if weights is None:
        return OFFICIAL_MODEL_ID
    return f"{Path(weights).name}@sha256:{_sha256(str(Path(weights).resolve()))[:12]}"


@functools.lru_cache(maxsize=8)
def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r}: not a torch device (expected cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")


def check_model_choice(model_name: str | None, weights: str | None, config: str | None) -> None:
    """Refuse --model together with --weights/--config, and an unknown --model name."""
    if model_name is None:
        return
    if weights is not None or config is not None:
        raise ValueError(f"--model {model_name}: give either --model or --weights/--config, not both")
    from mimi_codec.named_models import named_model

    named_model(model_name)  # ValueError naming the shipped models


def load_model(
    weights: str | None, config: str | None, device: str, num_codebooks: int = 8, model_name: str | None = None
) -> tuple[MimiModel, str]:
    """Load Mimi for a command; returns the model and its `model` id.

    Args:
        weights: local checkpoint path, or None for the official one.
        config: JSON path or preset name, or None.
        device: torch device string.
        num_codebooks: K the model encodes by default.
        model_name: a model shipped in the package (instead of weights/config), or None.
    """
    check_model_choice(model_name, weights, config)
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"weights file {weights} does not exist")
    _check_device(device)
    from mimi_codec import load_mimi

    model = load_mimi(weights=weights, config=config, device=device, num_codebooks=num_codebooks, model=model_name)
    return model, model_id(weights, model_name)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Silence what C libraries print straight to file descriptor 2 (mpg123's "Note: ..."
    lines when probing a damaged mp3), so a user sees only our one-line messages."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def is_stdio(path: str) -> bool:
    """Whether a path argument means stdin/stdout."""
    return path == "-"


def stderr_console(quiet: bool = False) -> Any:
    """A rich console on stderr (None when quiet)."""
    if quiet:
        return None
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def say(quiet: bool, message: str) -> None:
    """A summary line on stderr unless quiet."""
    console = stderr_console(quiet)
    if console is not None:
        console.print(message, markup=False)


def warn(message: str) -> None:
    """A yellow warning line on stderr (shown even with --quiet)."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold yellow]warning:[/] {message}", markup=True)


class Progress:
    """A rich progress bar on stderr that appears only once work has run for `delay` seconds,
    and never when quiet or when stderr is not a terminal.

    Args:
        description: label left of the bar.
        total: units of work (frames), None when unknown.
        quiet: never show.
        delay: seconds before the bar appears (short work stays silent).
    """

    def __init__(self, description: str, total: int | None, quiet: bool = False, delay: float = 1.5) -> None:
        self.description = description
        self.total = total  # None: unknown (a live stream), the bar just pulses
        self.done = 0
        self.enabled = not quiet and sys.stderr.isatty()
        self.delay = delay
        self.start = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def advance(self, n: int) -> None:
        """Record `n` more units done; shows the bar once the delay has passed."""
        self.done += n
        if not self.enabled:
            return
        if self._bar is None and time.monotonic() - self.start >= self.delay:
            from rich.console import Console
            from rich.progress import BarColumn, Progress as RichProgress, TaskProgressColumn, TextColumn
            from rich.progress import TimeElapsedColumn, TimeRemainingColumn

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.done)
        elif self._bar is not None:
            self._bar.update(self._task, completed=self.done)

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def encode_chunks(model: MimiModel, wavs: list[np.ndarray], num_codebooks: int) -> Iterator[np.ndarray]:
    """Encode a batch of mono clips, padded with zeros to the longest, chunk by chunk.

    Yields the codes of each chunk of `model.chunk_frames` frames, exactly as `model.encode`
    computes them (same chunks through the same streaming state, and the numba kernels paused
    as there: chunks this long gain nothing from them, and loading them costs a short file's
    run ~1 s and ~110 MB).

    Args:
        model: the Mimi model.
        wavs: B arrays [T_b] float32 at model.sample_rate.
        num_codebooks: K.

    Yields:
        codes: [B, K, c] int64 numpy arrays, c <= chunk_frames, in order.
    """
    import torch

    from mimi_codec.modules.gemm import numba_paused

    fs = model.frame_size
    frames = max(-(-len(w) // fs) for w in wavs)
    batch = np.zeros((len(wavs), 1, frames * fs), dtype=np.float32)
    for i, w in enumerate(wavs):
        batch[i, 0, : len(w)] = w
    step = model.chunk_frames * fs
    with torch.no_grad(), model.streaming(len(wavs)):
        for start in range(0, frames * fs, step):
            chunk = torch.from_numpy(batch[:, :, start : start + step])
            with numba_paused():  # not around the yield: a generator shares its caller's context
                codes = model.encode(chunk, num_codebooks=num_codebooks)
            yield codes.cpu().numpy()


class ChunkDecoder:
    """Decode one stream of codes fed in any pieces, in `model.chunk_frames` chunks, so the
    audio is exactly what `model.decode` gives for all the codes at once.

    Use inside `with model.streaming(1):`.

    Args:
        model: the Mimi model (streaming, batch size 1).
        num_codebooks: K of the codes that will be fed.
    """

    def __init__(self, model: MimiModel, num_codebooks: int) -> None:
        self.model = model
        self.pending = np.zeros((num_codebooks, 0), dtype=np.int64)
        self.parts: list[np.ndarray] = []

    def _decode(self, codes: np.ndarray) -> None:
        import torch

        from mimi_codec.modules.gemm import numba_paused

        with numba_paused():  # as `model.decode` and `encode_chunks`
            wav = self.model.decode(torch.from_numpy(np.ascontiguousarray(codes))[None])
        self.parts.append(wav[0, 0].float().cpu().numpy())

    def feed(self, codes: np.ndarray) -> int:
        """Add codes [K, n]; decode every whole chunk. Returns frames decoded by this call."""
        self.pending = np.concatenate([self.pending, codes], axis=1)
        n = self.model.chunk_frames
        whole = (self.pending.shape[1] // n) * n
        for start in range(0, whole, n):
            self._decode(self.pending[:, start : start + n])
        self.pending = self.pending[:, whole:]
        return whole

    def finish(self) -> np.ndarray:
        """Decode what is left; returns all the audio [T] float32."""
        if self.pending.shape[1]:
            self._decode(self.pending)
            self.pending = self.pending[:, :0]
        if not self.parts:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self.parts)


def check_header_matches_model(header: Any, model: MimiModel, name: str) -> None:
    """Refuse codes the model cannot decode (other rate, frame rate, code width or too many codebooks)."""
    if header.sample_rate != model.sample_rate or header.frame_rate != model.frame_rate:
        raise ValueError(
            f"{name} holds codes for {header.sample_rate} Hz at {header.frame_rate} frames/s; "
            f"this model is {model.sample_rate} Hz at {model.frame_rate} frames/s"
        )
    if (1 << header.codebook_bits) != model.cardinality:
        raise ValueError(
            f"{name} has {header.codebook_bits}-bit codes; this model's codebooks have {model.cardinality} entries"
        )
    if header.num_codebooks > model.total_codebooks:
        raise ValueError(f"{name} has {header.num_codebooks} codebooks; this model has {model.total_codebooks}")
