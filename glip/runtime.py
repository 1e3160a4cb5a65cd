"""Where and in which precision code runs: device resolution, autocast, moving a batch to a device.

One module for what the training loop, the GLIPv2 loops, the predictor, the evaluation and the CLI all need:

    device = resolve_device("auto")              # cuda (cuda:LOCAL_RANK under torchrun) when present, else cpu
    with autocast(device, "bf16"):               # nothing on CPUs without native bf16 (fp32 stays fp32)
        ...
    batch = to_device(batch, device)             # a glip.data.types.Batch (or anything with .to / tensors)

It also holds the one process-wide numeric setting the library makes: :func:`flush_denormals`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import time
from typing import Any

import torch

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")

# GLIP_FLUSH_DENORMAL=0 in the environment (before glip's model code is imported) keeps IEEE denormals
FLUSH_DENORMAL = os.environ.get("GLIP_FLUSH_DENORMAL", "1").strip().lower() not in ("0", "false", "no", "off")


def flush_denormals() -> bool:
    """Make CPU float ops flush denormal numbers to zero (``torch.set_flush_denormal(True)``: FTZ + DAZ).

    Called once when glip's model code is first imported (``glip.models``), i.e. before the first
    parallel op creates torch's CPU thread pool: the pool's threads inherit the setting of the thread that
    creates them, a later call reaches the calling thread only. Why: the shifted-window mask of Swin
    (-100) makes ``exp`` produce denormals, and a GEMM over denormal inputs runs many times slower (one Swin
    GEMM at 26 GFLOP/s against ~300); GLIP-T's forward is ~10 % faster on 2 cores and its outputs are the
    same bits (tested on the official reference model). It affects every float op of the process (values
    below 1.2e-38 become 0). Opt out with ``GLIP_FLUSH_DENORMAL=0`` in the environment. Returns whether the
    CPU supports it and it is on (False when opted out).
    """
    if not FLUSH_DENORMAL:
        return False
    return bool(torch.set_flush_denormal(True))


def resolve_device(device: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """``"auto"`` / ``None``: CUDA when available, else CPU; ``"cuda"`` under torchrun: ``cuda:LOCAL_RANK``.

    ``local_rank`` defaults to the ``LOCAL_RANK`` environment variable when a distributed launcher set it.
    A name torch does not know, or CUDA asked for where none is present, raises ``ValueError`` with the fix.
    """
    if isinstance(device, torch.device):
        return device
    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if local_rank is None and "LOCAL_RANK" in os.environ and os.environ.get("WORLD_SIZE", "1") != "1":
        local_rank = int(os.environ["LOCAL_RANK"])
    if name == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} asked for, but CUDA is not available here: use --device cpu or auto"
        )
    return resolved


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when a bf16 matmul on this CPU is at least half as fast as fp32 (measured once, ~50 ms).

    CPU flags are not enough: the 2-core CI machines advertise avx512_bf16, yet a bf16 matmul there runs
    ~200x slower than fp32 (0.3 vs 158 GFLOP/s), so bf16 must never be a CPU default.
    """
    a32 = torch.randn(256, 256)
    b32 = torch.randn(256, 256)
    a16, b16 = a32.bfloat16(), b32.bfloat16()

    def best(x: torch.Tensor, y: torch.Tensor) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            torch.mm(x, y)
            times.append(time.perf_counter() - start)
        return min(times)

    fp32, bf16 = best(a32, b32), best(a16, b16)
    return bf16 <= 2.0 * fp32


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a reduced precision that would be far slower than fp32 on this device (CPU fp16, CPU bf16
    without native support); unknown names raise too."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "fp32" and device.type == "cpu" and (precision == "fp16" or not cpu_has_native_bf16()):
        raise ValueError(
            f"{precision} on this CPU would be far slower than fp32 (no native support): use fp32 on CPU"
        )


def autocast_dtype(precision: str) -> torch.dtype | None:
    """``fp16`` -> float16, ``bf16`` -> bfloat16, ``fp32`` / ``none`` -> None (no autocast)."""
    if precision in ("fp32", "none"):
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    raise ValueError(f"unknown precision {precision!r} (fp32, fp16, bf16)")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """An autocast context for ``precision`` on ``device``; a null context for fp32 (CPU paths stay fp32)."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def training_autocast(amp: str, device: torch.device) -> tuple[contextlib.AbstractContextManager, bool]:
    """(autocast context, whether to use a GradScaler) for the training ``amp`` mode (none, fp16, bf16).

    On CPU only bf16 with native support is honoured; anything else trains in fp32 with a warning."""
    if amp == "none":
        return contextlib.nullcontext(), False
    if amp not in ("fp16", "bf16"):
        raise ValueError(f"unknown amp mode {amp!r} (none, fp16, bf16)")
    if device.type == "cpu":
        if amp == "bf16" and cpu_has_native_bf16():
            return torch.autocast("cpu", dtype=torch.bfloat16), False
        logger.warning("amp=%s ignored on this CPU (no native support): training in fp32", amp)
        return contextlib.nullcontext(), False
    return autocast(device, amp), amp == "fp16"


def to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move a batch to ``device``: tensors, objects with ``.to`` (targets), lists/tuples/dicts of them, and
    dataclasses (their fields, recursively). Other values are returned as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(item, device, non_blocking) for item in batch)
    if isinstance(batch, dict):
        return {key: to_device(value, device, non_blocking) for key, value in batch.items()}
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {
            f.name: to_device(getattr(batch, f.name), device, non_blocking)
            for f in dataclasses.fields(batch)
            if f.init
        }
        return dataclasses.replace(batch, **changes)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch
