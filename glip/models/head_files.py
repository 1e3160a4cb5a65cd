"""The files of a small head saved beside a model: ``NAME.json`` (its settings) + ``NAME.safetensors``.

Used by the GLIPv2 VQA and captioning heads (:mod:`glip.models.vqa`, :mod:`glip.models.captioning`). Written
atomically (temp file + rename); read strictly from safetensors (no pickle), fp16 files back to fp32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from glip.fileio import atomic_write_path, atomic_write_text

__all__ = ["load_head_weights", "read_head_meta", "save_head_files"]


def save_head_files(
    module: torch.nn.Module, directory: str | Path, files: tuple[str, str], meta: dict[str, Any], half: bool
) -> Path:
    """Write ``module``'s weights to ``directory / files[1]`` and ``meta`` to ``directory / files[0]``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    atomic_write_path(directory / files[1], lambda tmp: save_file(state, str(tmp)))
    atomic_write_text(directory / files[0], json.dumps(meta, indent=2) + "\n")
    return directory


def read_head_meta(directory: str | Path, files: tuple[str, str]) -> dict[str, Any] | None:
    """The settings of a head saved in ``directory``, or None when either of its two files is missing."""
    directory = Path(directory)
    if not all((directory / name).is_file() for name in files):
        return None
    return json.loads((directory / files[0]).read_text())


def load_head_weights(module: torch.nn.Module, weights: str | Path) -> None:
    """Load ``weights`` (safetensors) into ``module`` strictly, floating-point tensors as fp32."""
    from safetensors.torch import load_file

    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
    module.load_state_dict(state, strict=True)
