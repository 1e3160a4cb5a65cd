"""Training checkpoints: model, optimiser, scheduler, step, RNG states and the resolved configs.

Written atomically (temporary file + ``os.replace``): a run killed while saving leaves the previous
checkpoint intact. ``last.pt`` is what ``--resume`` continues from.

Checkpoints hold tensors and plain data only (numbers, strings, lists, dicts; RNG states are stored as
tensors), so they are read with ``torch.load(weights_only=True)``: a ``last.pt`` planted in a run folder
cannot run code on ``--resume``. A file that needs full unpickling is refused unless ``trust_pickle=True``
(``glip train --resume --trust-pickle``), for files you trust.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glip.fileio import atomic_write_path

LAST = "last.pt"


class CheckpointLoadError(ValueError):
    """A training checkpoint that cannot be resumed from; the message says why and what to do."""


def _numpy_state() -> dict[str, Any]:
    """numpy's global MT19937 state as tensors + plain numbers (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _set_numpy_state(state: Any) -> None:
    if isinstance(state, dict):
        keys = state["keys"].numpy().astype(np.uint32)
        state = (state["name"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"])
    np.random.set_state(state)


def rng_state() -> dict[str, Any]:
    """The torch, numpy, python (and CUDA) global RNG states, as tensors and plain data."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    _set_numpy_state(state["numpy"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file in the same directory, then rename over ``path``
    (:func:`glip.fileio.atomic_write_path`: the umask's permissions, a full disk named)."""
    return atomic_write_path(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    ``trust_pickle=True`` allows full unpickling (a file from an older glip, or one you made yourself with
    other objects in it) — only for files you trust: unpickling can run arbitrary code.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint to resume from at {path}")
    if path.stat().st_size == 0:
        raise CheckpointLoadError(
            f"checkpoint {path} is empty (a run killed while writing?): delete it to start over"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if trust_pickle:
            raise CheckpointLoadError(
                f"checkpoint {path} is unreadable ({exc}); delete it to start over"
            ) from None
        raise CheckpointLoadError(
            f"checkpoint {path} holds more than tensors and plain data, and unpickling it could run code: "
            "it was not written by this glip. Resume from it only if you trust the file "
            "(glip train --resume --trust-pickle, or fit(..., trust_pickle=True)); otherwise delete it"
        ) from None
    except Exception as exc:  # noqa: BLE001 - report any unreadable file the same way
        raise CheckpointLoadError(
            f"checkpoint {path} is unreadable or truncated ({type(exc).__name__}: {exc}); delete it to start over"
        ) from None
