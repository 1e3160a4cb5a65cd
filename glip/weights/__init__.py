"""Loading, saving and converting weights; released names; :func:`resolve_model` (name -> GLIP).

``resolve_model`` is imported on first use so that ``glip.weights.registry`` stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from glip.weights.resolve import resolve_model

__all__ = ["resolve_model"]


def __getattr__(name: str) -> Any:
    if name == "resolve_model":
        return importlib.import_module("glip.weights.resolve").resolve_model
    raise AttributeError(f"module 'glip.weights' has no attribute {name!r}")
