"""Keeping the resident memory of large CPU forwards close to what they actually use.

On Linux, torch's CPU tensors come from glibc's ``malloc``. After the first large block is freed, glibc raises
its mmap threshold (up to 32 MB), so later intermediates come from the heap; freed heap blocks stay in the
process, and fragmentation makes the heap grow past the live data. For one GLIP-T forward at 800x1333 the
resident size peaks ~240 MB above the live tensors (``benchmarks/memory.py`` measures it per stage).

:func:`large_forward` is wrapped around the image encoder, the head and the whole ``GLIP.forward``. During a
no-grad CPU forward over a large input it sets glibc's mmap threshold to :data:`MMAP_THRESHOLD` (1 MB), so every
block above that size is mapped on allocation and returned to the system when freed, and it returns free heap
pages (``malloc_trim``) on entry and exit. On exit the threshold is set to :data:`RESTORE_THRESHOLD`, the
value glibc's own adjustment reaches in a process that frees large tensors. Results do not change; the cost
is the page faults of fresh mappings (``docs/benchmarks.md``: GLIP-T ~1.9 GB instead of ~2.1 GB peak, about
1.5x the forward time on 2 cores; torch's ``THP_MEM_ALLOC_ENABLE=1`` takes most of that time back).

``glip.memory.RELEASE = "never"`` (or the environment variable ``GLIP_MEMORY_RELEASE=never``) turns it off;
with a C library other than glibc it does nothing. Training (autograd on) is never affected.
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

RELEASE = os.environ.get("GLIP_MEMORY_RELEASE", "auto")  # "auto" | "never"
# inputs smaller than one 512x512 image (batch x height x width in image pixels) are not worth it
MIN_PIXELS = 512 * 512
MMAP_THRESHOLD = 1 << 20
RESTORE_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)

_lock = threading.Lock()
_depth = 0


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
    the treatment: ``RELEASE == "auto"``, no autograd, CPU, at least :data:`MIN_PIXELS` image pixels, glibc."""
    return (
        RELEASE == "auto"
        and not torch.is_grad_enabled()
        and reference.device.type == "cpu"
        and image_pixels(reference, stride) >= MIN_PIXELS
        and _glibc() is not None
    )


@contextlib.contextmanager
def large_forward(reference: torch.Tensor, stride: int = 1) -> Iterator[bool]:
    """Run the block with a low mmap threshold if :func:`applies`; yields whether it does. Nests."""
    global _depth
    active = applies(reference, stride)
    if active:
        libc = _glibc()
        with _lock:
            if _depth == 0:
                libc.malloc_trim(0)  # type: ignore[union-attr]
                libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # type: ignore[union-attr]
            _depth += 1
    try:
        yield active
    finally:
        if active:
            with _lock:
                _depth -= 1
                if _depth == 0:
                    libc.mallopt(_M_MMAP_THRESHOLD, RESTORE_THRESHOLD)  # type: ignore[union-attr]
                    libc.malloc_trim(0)  # type: ignore[union-attr]
