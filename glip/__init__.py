"""GLIP / GLIPv2 in pure PyTorch: open-vocabulary detection and phrase grounding.

Public API::

    import glip
    model = glip.load_model("glip_t")                   # or a .pth / a saved directory
    model = glip.build_model(glip.get_preset("tiny"))    # randomly initialised

The names below are imported on first use (PEP 562), so ``import glip`` alone does not import torch and
``glip --help`` starts fast.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from glip.lazy import lazy_exports
from glip.version import __version__ as __version__


def _huge_pages() -> bool:
    """Ask torch's CPU allocator for transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``: blocks of 2 MB and
    more are ``madvise(MADV_HUGEPAGE)``d), unless ``GLIP_HUGE_PAGES=0`` or the variable is already set. torch
    reads it once, so this only works when glip is imported before torch (the ``glip`` command always is).
    Large mapped blocks then fault in 2 MB at a time: measured 6-8 % faster GLIP-T forwards at the same peak
    (docs/benchmarks.md). Returns whether the variable is now "1"."""
    if os.environ.get("GLIP_HUGE_PAGES", "1").strip().lower() not in ("0", "false", "no", "off"):
        if "torch" not in sys.modules:
            os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    return os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"


_huge_pages()

# public name -> the module that defines it
_EXPORTS = {
    "GLIP": "glip.models.glip",
    "GLIPOutput": "glip.models.glip",
    "build_model": "glip.models.glip",
    "PRESETS": "glip.config",
    "GLIPConfig": "glip.config",
    "get_preset": "glip.config",
    "Detections": "glip.postprocess",
    "CheckpointError": "glip.weights.loading",
    "load_model": "glip.weights.loading",
    "save_model": "glip.weights.loading",
    "resolve_model": "glip.weights.resolve",
    "available_models": "glip.weights.registry",
}

__all__ = [
    "GLIP",
    "PRESETS",
    "CheckpointError",
    "Detections",
    "GLIPConfig",
    "GLIPOutput",
    "available_models",
    "build_model",
    "get_preset",
    "load_model",
    "resolve_model",
    "save_model",
]

if TYPE_CHECKING:  # pragma: no cover
    from glip.config import PRESETS, GLIPConfig, get_preset
    from glip.models.glip import GLIP, GLIPOutput, build_model
    from glip.postprocess import Detections
    from glip.weights.loading import CheckpointError, load_model, save_model
    from glip.weights.registry import available_models
    from glip.weights.resolve import resolve_model


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
