"""Lazy package attributes (PEP 562): a package names its public objects and the submodule of each, and
they are imported on first access, so ``import glip`` (and ``glip --help``) does not load torch.

Standard library only.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` (its ``__name__``, called from its ``__init__``).

    exports: public name -> the module that defines it, absolute (``"glip.models.glip"``) or, without a dot,
    a submodule of ``package`` (``"odvg"``). A name is imported once, then stored in the package's namespace,
    so later look-ups do not reach ``__getattr__``.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module if "." in module else f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
