"""The `huge_pages` speedup: a model's large weights in memory backed by 2 MiB pages.

A streamed frame reads ~330 MB of weights once each, at the memory's pace. On 4 KiB pages
that is ~80,000 pages, each needing its own TLB entry and page walk; on 2 MiB pages, ~160.
On the EPYC machine the numba GEMMs read a transformer's weights at 15.5-16.4 GB/s from
huge pages against 13.2-13.7 GB/s from ordinary ones (docs/performance.md).

Linux gives anonymous memory huge pages when asked (`madvise(MADV_HUGEPAGE)`) if its
transparent huge pages are set to "madvise" or "always"; `move_weights` copies every large
floating-point parameter and buffer into one such region (an "arena"), each tensor keeping
its shape, strides and values, and rebinds `param.data` to it. Values never change, only
where they live. Elsewhere (another OS, huge pages off, a Python without `MADV_HUGEPAGE`)
`available()` is False and nothing moves.
"""

from __future__ import annotations

import functools
import mmap
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

#: Tensors of at least this many bytes move (the weights a streamed frame streams through).
MIN_BYTES = 1 << 20
#: The huge page size the arena is aligned to.
HUGE_PAGE = 2 << 20
#: Each tensor starts on a cache-line boundary within the arena.
ALIGN = 64

_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@functools.cache
def available() -> bool:
    """True on Linux with transparent huge pages in "madvise" or "always" mode."""
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        mode = _THP.read_text()
    except OSError:
        return False
    return "[never]" not in mode


def _dropped() -> None:
    return None


class Arena:
    """One anonymous memory region advised to use huge pages; tensors placed in it keep it
    alive (through the numpy array they view), so it is unmapped when the last one goes.
    A copied or pickled model holds ordinary tensors, so the arena copies as None."""

    def __deepcopy__(self, memo: dict[int, object]) -> None:
        return None

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _dropped, ()

    def __init__(self, size: int) -> None:
        self._map = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._map.madvise(mmap.MADV_HUGEPAGE)
        self.bytes = np.frombuffer(self._map, dtype=np.uint8)
        self.start = self.bytes.ctypes.data + (-self.bytes.ctypes.data) % HUGE_PAGE
        self._used = self.start - self.bytes.ctypes.data
        self.end = self.start + size

    def contains(self, t: torch.Tensor) -> bool:
        """True when t's storage lies in this arena."""
        return self.start <= t.untyped_storage().data_ptr() < self.end

    def allocate(self, nbytes: int) -> np.ndarray:
        """The next `nbytes` of the arena (ALIGN-aligned), as a writable uint8 array."""
        off = self._used + (-self._used) % ALIGN
        if off + nbytes > len(self.bytes):
            raise ValueError(f"arena full: {nbytes} bytes do not fit")
        self._used = off + nbytes
        return self.bytes[off: off + nbytes]

    def place(self, t: torch.Tensor) -> torch.UntypedStorage:
        """A storage in the arena holding a copy of t's (which t covers whole)."""
        storage = torch.from_numpy(self.allocate(t.untyped_storage().nbytes())).untyped_storage()
        _view(storage, t).copy_(t)
        return storage


def huge_copy(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of `a` in a huge-page region of its own, for the weight forms the
    kernels derive (transposed, repacked); `a` itself where huge pages are unavailable or it
    is under MIN_BYTES. The region lives as long as the returned array."""
    if not available() or a.nbytes < MIN_BYTES:
        return a
    out = huge_empty(a.shape, a.dtype)
    out[...] = a
    return out


def huge_empty(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised C-contiguous array in a huge-page region of its own (as `huge_copy`),
    or an ordinary one where huge pages are unavailable or it is under MIN_BYTES: for a
    derived form built in place, without a second copy."""
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dt.itemsize
    if not available() or nbytes < MIN_BYTES:
        return np.empty(shape, dtype=dt)
    arena = Arena(nbytes)
    start = arena.start - arena.bytes.ctypes.data
    return arena.bytes[start: start + nbytes].view(dt).reshape(shape)


def _view(storage: torch.UntypedStorage, like: torch.Tensor) -> torch.Tensor:
    """A tensor on `storage` with like's dtype, shape and strides."""
    return torch.empty(0, dtype=like.dtype).set_(storage, 0, like.shape, like.stride())


def _large(module: nn.Module) -> list[torch.Tensor]:
    """The large floating-point CPU parameters and buffers, each covering its whole storage
    (a view into a larger one stays where it is)."""
    found = []
    for owner in module.modules():
        for table in (owner._parameters, owner._buffers):
            for t in table.values():
                if (t is not None and t.device.type == "cpu" and t.is_floating_point()
                        and t.storage_offset() == 0
                        and t.untyped_storage().nbytes() == t.numel() * t.element_size() >= MIN_BYTES):
                    found.append(t)
    return found


def _relocate(tensors: list[torch.Tensor],
              copy: Callable[[torch.Tensor], torch.UntypedStorage]) -> dict[int, torch.UntypedStorage]:
    """Rebind each tensor's `.data` to `copy(t.data)`, a new storage with the same bytes;
    tensors sharing a storage share its copy. Returns the new storages by old address."""
    storages: dict[int, torch.UntypedStorage] = {}
    for t, key in [(t, t.untyped_storage().data_ptr()) for t in tensors]:  # keys before rebinding
        if key not in storages:
            storages[key] = copy(t.data)
        with torch.no_grad():
            t.data = _view(storages[key], t)
    return storages


def move_weights(module: nn.Module, on: bool) -> int:
    """Put `module`'s large weights in huge-page memory (`on`) or back in ordinary memory.

    With `on`, does nothing when they all already share one arena; otherwise copies them,
    one at a time (each old copy is freed as soon as nothing else holds it), into a fresh
    arena. Call-site caches keyed on a weight's storage (packed copies, numpy views) see the
    new storage and rebuild.

    Args:
        module: the model.
        on: the `huge_pages` switch.
    Returns:
        bytes now in huge-page memory.
    """
    tensors = _large(module)
    arena = getattr(module, "_huge_arena", None)
    if not on or not available():
        if arena is not None:
            _relocate([t for t in tensors if arena.contains(t)],
                      lambda d: d.clone(memory_format=torch.preserve_format).untyped_storage())
            _forget_views(module)
        module._huge_arena = None  # type: ignore[assignment]
        return 0
    unique = {t.untyped_storage().data_ptr(): t for t in tensors}  # shared storages move once
    if arena is not None and all(arena.contains(t) for t in tensors):
        return sum(t.untyped_storage().nbytes() for t in unique.values())
    arena = Arena(sum(t.untyped_storage().nbytes() + ALIGN for t in unique.values()))
    storages = _relocate(tensors, arena.place)
    _forget_views(module)
    module._huge_arena = arena  # type: ignore[assignment]
    return sum(s.nbytes() for s in storages.values())


def _forget_views(module: nn.Module) -> None:
    """Empty the GEMM weight caches, whose numba entries view the old storages (keeping them
    alive until the next call would rebuild them)."""
    from .gemm import PackedWeight

    for m in module.modules():
        if isinstance(getattr(m, "_packed", None), PackedWeight):
            m._packed = PackedWeight()
