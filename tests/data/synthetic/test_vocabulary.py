"""The vocabulary of the synthetic world: disjoint groups, and a module that imports alone (stdlib only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from glip.data.synthetic.vocabulary import (
    NEW_COLOURS,
    NEW_SHAPES,
    RARE_COLOURS,
    RARE_SHAPES,
    RGB,
    SEEN_COLOURS,
    SEEN_SHAPES,
    SIZES,
    SYNONYMS,
    TEXTURE_WORDS,
)

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "numpy", "PIL")


def test_vocabulary_groups_are_disjoint():
    groups = [
        set(SEEN_COLOURS),
        set(RARE_COLOURS),
        set(NEW_COLOURS),
        set(SEEN_SHAPES),
        set(RARE_SHAPES),
        set(NEW_SHAPES),
        set(SIZES),
        set(TEXTURE_WORDS.values()),
        set(SYNONYMS),
    ]
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            assert not a & b
    assert set(SYNONYMS.values()) <= set(SEEN_COLOURS) | set(SIZES) | set(TEXTURE_WORDS.values())
    assert set(RGB) == set(SEEN_COLOURS + RARE_COLOURS + NEW_COLOURS)


def _loaded_after(code: str) -> list[str]:
    """The heavy packages in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"import sys\n{code}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    return [m for m in result.stdout.strip().split(",") if m]


def test_vocabulary_and_packages_import_without_torch_numpy_pil() -> None:
    """glip.data, glip.data.synthetic and the vocabulary import nothing heavy (the root ``glip`` package is
    bypassed here: it imports the model eagerly)."""
    stub = (
        "import types\n"
        "glip = types.ModuleType('glip')\n"
        f"glip.__path__ = [{str(ROOT / 'glip')!r}]\n"
        "sys.modules['glip'] = glip\n"
        "import glip.data.synthetic.vocabulary as vocabulary\n"
        "assert vocabulary.detection_categories('train') and vocabulary.vocabulary()\n"
        "import glip.data.synthetic as synthetic\n"
        "assert synthetic.SEEN_COLOURS == vocabulary.SEEN_COLOURS\n"
    )
    assert _loaded_after(stub) == []


def test_import_vocabulary_alone() -> None:
    """``import glip.data.synthetic.vocabulary`` leaves torch, numpy and PIL out of ``sys.modules``."""
    if _loaded_after("import glip"):
        pytest.skip("the root glip package still imports torch eagerly (glip/__init__.py)")
    assert _loaded_after("import glip.data.synthetic.vocabulary") == []


def test_weights_demo_names_need_only_the_vocabulary() -> None:
    source = (ROOT / "glip" / "weights" / "demo.py").read_text()
    imports = [line for line in source.splitlines() if "glip.data" in line and "import" in line]
    assert imports == ["from glip.data.synthetic.vocabulary import SEEN_COLOURS, SEEN_SHAPES"]
