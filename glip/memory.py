"""Keeping the resident memory of large CPU forwards close to what they actually use.

On Linux, torch's CPU tensors come from glibc's ``malloc``. After the first large block is freed, glibc raises
its mmap threshold (up to 32 MB), so later intermediates come from the heap; freed heap blocks stay in the
process, and fragmentation makes the heap grow past the live data. For one GLIP-T forward at 800x1333 the
resident size peaks ~240 MB above the live tensors (``benchmarks/memory.py`` measures it per stage).

:func:`large_forward` is wrapped around the image encoder, the head, the whole ``GLIP.forward`` and the
predictor's batch (its backbone and every prompt's head, so that many prompts share one setting). During a
no-grad CPU forward over a large input it changes glibc's allocator settings, by one of two strategies:

* ``"map"`` (the default, ``RELEASE = "auto"``): glibc's mmap threshold is set to :data:`MAP_THRESHOLD`
  (16 MB), so the largest blocks are mapped on allocation and returned to the system when freed, and the
  rest comes from the heap, whose freed blocks are reused without page faults. Measured (``docs/benchmarks.md``,
  GLIP-T at 800x1333, 2 cores): ~1.09x the time of ``"never"`` at ~1960 MB instead of ~2000-2060 MB. With a
  1 MB threshold (the default before 2026-12-07) the peak is ~1870 MB but the forward takes ~1.5x: every
  fresh mapping is page-faulted and zeroed by the kernel. The model's CPU inference paths allocate little
  (:func:`in_place`; ``benchmarks/allocations.py``), which is what makes the larger threshold cheap.
* ``"stages"`` (opt-in, ``GLIP_MEMORY_RELEASE=stages``): blocks up to :data:`HEAP_THRESHOLD` (32 MB) come
  from the heap (fixed, so glibc's dynamic adjustment does not move it), glibc's own trimming is held back
  (:data:`TRIM_THRESHOLD`), and free heap pages are returned only at stage ends (:func:`stage_end`: after
  the backbone and after each head block's fusion and DyConv), so blocks are reused inside a stage without
  page faults and the heap never carries one stage's fragmentation into the next. Measured at GLIP-T scale
  (docs/benchmarks.md, 2026-12-07): 1.10-1.15x the time of ``"never"`` at 2000-2159 MB, so not the default.

Both return free heap pages (``malloc_trim``) on entry and exit; on exit the threshold is set to
:data:`RESTORE_THRESHOLD`, the value glibc's own adjustment reaches in a process that frees large tensors.
Results do not change (tested).

``GLIP_MEMORY_MAP_THRESHOLD`` (bytes, read at import) sets :data:`MAP_THRESHOLD` (e.g. ``1048576`` for the lowest
peak at ~1.5x the time). ``glip.memory.RELEASE = "never"`` (or the environment variable
``GLIP_MEMORY_RELEASE=never``) turns it off;
with a C library other than glibc it does nothing. Training (autograd on) and accelerator tensors are never
affected.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading
from collections.abc import Iterator

import torch

RELEASE = os.environ.get("GLIP_MEMORY_RELEASE", "auto")  # "auto" | "stages" | "map" | "never"
# inputs smaller than one 512x512 image (batch x height x width in image pixels) are not worth it
MIN_PIXELS = 512 * 512


def _env_bytes(name: str, default: int, maximum: int | None = None) -> int:
    """A size in bytes from the environment (``default`` when unset), at most ``maximum``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected a size in bytes, e.g. {default}") from None
    return max(0, value if maximum is None else min(value, maximum))


# glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX): mallopt refuses more, silently
MAX_MMAP_THRESHOLD = 32 << 20
# "map": every block of this size or more is mapped on allocation and unmapped when freed (16 MB: the
# largest intermediates of a GLIP-T forward at 800x1333; smaller ones come from the heap, reused without page
# faults; docs/benchmarks.md compares 1, 8 and 16 MB)
MAP_THRESHOLD = _env_bytes("GLIP_MEMORY_MAP_THRESHOLD", 16 << 20, MAX_MMAP_THRESHOLD)
MMAP_THRESHOLD = MAP_THRESHOLD  # the old name
# "stages": blocks up to this size come from the heap (fixed: no dynamic adjustment during the forward);
# free heap pages are returned only at stage ends (stage_end)
HEAP_THRESHOLD = _env_bytes("GLIP_MEMORY_HEAP_THRESHOLD", 32 << 20, MAX_MMAP_THRESHOLD)
TRIM_THRESHOLD = _env_bytes("GLIP_MEMORY_TRIM_THRESHOLD", 256 << 20)
STAGE_TRIM = os.environ.get("GLIP_MEMORY_STAGE_TRIM", "1") != "0"  # "stages": trim at stage ends
RESTORE_THRESHOLD = MAX_MMAP_THRESHOLD  # where glibc's dynamic adjustment ends
RESTORE_TRIM_THRESHOLD = 2 * RESTORE_THRESHOLD  # what glibc's dynamic adjustment sets with it
_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3

_lock = threading.Lock()
_depth = 0
_mode = ""


def _strategy() -> str:
    mode = "map" if RELEASE == "auto" else RELEASE
    return mode if mode in ("stages", "map") else "never"


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    return libc


def image_pixels(reference: torch.Tensor, stride: int = 1) -> int:
    """Image pixels a (B, C, H, W) tensor stands for: B x H x W x stride^2 (stride: of a feature map); 0 for
    any other shape (e.g. the empty image tensor of a text-only forward)."""
    if reference.dim() != 4:
        return 0
    batch, _, height, width = reference.shape
    return batch * height * width * stride * stride


def applies(reference: torch.Tensor, stride: int = 1) -> bool:
    """Whether a forward over ``reference`` (B, C, H, W: images, or a feature map of that ``stride``) gets
    the treatment: ``RELEASE != "never"``, no autograd, CPU, at least :data:`MIN_PIXELS` image pixels, glibc."""
    return (
        _strategy() != "never"
        and not torch.is_grad_enabled()
        and reference.device.type == "cpu"
        and image_pixels(reference, stride) >= MIN_PIXELS
        and _glibc() is not None
    )


@contextlib.contextmanager
def large_forward(reference: torch.Tensor, stride: int = 1) -> Iterator[bool]:
    """Run the block with the allocator settings of :data:`RELEASE` if :func:`applies`; yields whether it
    does. Nests (the outermost entry sets, its exit restores)."""
    global _depth, _mode
    active = applies(reference, stride)
    if active:
        libc = _glibc()
        with _lock:
            if _depth == 0:
                _mode = _strategy()
                libc.malloc_trim(0)  # type: ignore[union-attr]
                if _mode == "map":
                    libc.mallopt(_M_MMAP_THRESHOLD, MAP_THRESHOLD)  # type: ignore[union-attr]
                else:
                    libc.mallopt(_M_MMAP_THRESHOLD, HEAP_THRESHOLD)  # type: ignore[union-attr]
                    libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)  # type: ignore[union-attr]
            _depth += 1
    try:
        yield active
    finally:
        if active:
            with _lock:
                _depth -= 1
                if _depth == 0:
                    libc.mallopt(_M_MMAP_THRESHOLD, RESTORE_THRESHOLD)  # type: ignore[union-attr]
                    if _mode != "map":
                        libc.mallopt(_M_TRIM_THRESHOLD, RESTORE_TRIM_THRESHOLD)  # type: ignore[union-attr]
                    libc.malloc_trim(0)  # type: ignore[union-attr]
                    _mode = ""


def in_place(*tensors: torch.Tensor) -> bool:
    """Whether a forward may write its intermediates in place or into reused buffers: CPU inference (no
    autograd, not exporting, no CPU autocast) with tensors of one dtype. The model's in-place paths compute
    the same operations on the same numbers as the out-of-place ones (the same bits); they only allocate
    less (``benchmarks/allocations.py``: fewer and smaller blocks, fewer page faults in the ``map`` mode)."""
    first = tensors[0]
    return (
        first.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_exporting()
        and not torch.is_autocast_enabled("cpu")
        and all(t.dtype == first.dtype for t in tensors)
    )


def stage_end() -> None:
    """End of a stage of a large forward (backbone, each fusion / DyConv block): in the "stages" strategy,
    return the heap's free pages to the system. Nothing outside :func:`large_forward` or in other modes."""
    if _depth > 0 and _mode == "stages" and STAGE_TRIM:
        libc = _glibc()
        if libc is not None:
            libc.malloc_trim(0)
