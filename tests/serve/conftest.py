"""The demo model, loaded once for every serve test (skipped when its packages are missing)."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "fastapi", reason="the serve extra is not installed (pip install '.[serve]' in the glip checkout)"
)
pytest.importorskip(
    "uvicorn", reason="the serve extra is not installed (pip install '.[serve]' in the glip checkout)"
)
pytest.importorskip(
    "httpx", reason="the serve extra is not installed (pip install '.[serve]' in the glip checkout)"
)


@pytest.fixture(scope="session")
def demo_predictor():
    from glip.predictor import GLIPPredictor
    from glip.weights.demo import DEMO_MODEL_DIR, demo_model_available

    if not demo_model_available():
        pytest.skip("the demo model or its text encoder package is not installed")
    return GLIPPredictor.from_pretrained(str(DEMO_MODEL_DIR), device="cpu")


@pytest.fixture(scope="session")
def demo_classes() -> list[str]:
    from glip.weights.demo import DEMO_PROMPT

    return DEMO_PROMPT.split(",")


@pytest.fixture(scope="session")
def demo_server(demo_predictor, demo_classes):
    """A real uvicorn server on 127.0.0.1 (a free port) serving the demo model."""
    from glip.serve.app import create_app
    from glip.serve.server import BackgroundServer

    app = create_app(demo_predictor, max_wait_ms=20, model_name="demo", classes_hint=demo_classes)
    with BackgroundServer(app) as server:
        yield server
