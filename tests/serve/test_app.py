"""glip.serve.app against a real uvicorn server on 127.0.0.1 with the bundled demo model."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from glip.images import load_image
from glip.serve.app import create_app
from glip.serve.server import BackgroundServer
from glip.weights.demo import DEMO_EXAMPLES_DIR

EXAMPLE = DEMO_EXAMPLES_DIR / "test_000002.png"


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with (almost) no data: PIL must refuse it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def detect(url: str, image: bytes | None = None, name: str = "image.png", **fields: str) -> httpx.Response:
    files = {"image": (name, image, "image/png")} if image is not None else None
    return httpx.post(url + "/detect", files=files, data=fields, timeout=60)


def test_health_models_and_page(demo_server, demo_classes):
    health = httpx.get(demo_server.url + "/health").json()
    assert health["status"] == "ok" and "batch_sizes" in health["stats"]
    models = httpx.get(demo_server.url + "/models").json()
    assert models["name"] == "demo" and models["preset"] == "tiny"
    assert models["classes_hint"] == demo_classes
    assert models["tasks"] == {"detect": True, "masks": False, "ask": False, "caption": False}
    page = httpx.get(demo_server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<canvas" in page.text and 'id="detections"' in page.text
    assert "<script src" not in page.text and "https://" not in page.text  # self-contained, no CDN


def test_detect_is_the_predictions_json_record(demo_server, demo_predictor, demo_classes):
    response = detect(demo_server.url, EXAMPLE.read_bytes(), "shapes.png", classes=",".join(demo_classes))
    assert response.status_code == 200, response.text
    expected = demo_predictor.predict(load_image(EXAMPLE), classes=demo_classes, threshold=0.5)
    expected.source = "shapes.png"
    assert response.json() == expected.to_dict()
    assert len(response.json()["detections"]) > 0

    response = detect(
        demo_server.url, EXAMPLE.read_bytes(), threshold="0.3", classes="red circle, blue square"
    )
    expected = demo_predictor.predict(
        load_image(EXAMPLE), classes=["red circle", "blue square"], threshold=0.3
    )
    expected.source = "image.png"
    assert response.json() == expected.to_dict()


def test_detect_caption_with_phrases(demo_server, demo_predictor):
    caption, phrases = "a red circle and a blue square", ["a red circle", "a blue square"]
    response = detect(demo_server.url, EXAMPLE.read_bytes(), caption=caption, phrases=";".join(phrases))
    assert response.status_code == 200, response.text
    expected = demo_predictor.predict(load_image(EXAMPLE), caption=caption, phrases=phrases)
    expected.source = "image.png"
    assert response.json() == expected.to_dict() and response.json()["caption"] == caption


@pytest.fixture(scope="module")
def strict_server(demo_predictor):
    """Small limits, so that over-limit requests stay small."""
    app = create_app(demo_predictor, max_upload_bytes=50_000, max_pixels=1_000_000, max_prompt_chars=2000)
    with BackgroundServer(app) as server:
        yield server


GOOD = {"classes": "red circle"}
BAD_REQUESTS = {
    "not an image": (b"hello, I am text", GOOD, 400, "not an image"),
    "empty file": (b"", GOOD, 400, "empty"),
    "truncated png": (png_bytes(Image.new("RGB", (64, 64), "red"))[:60], GOOD, 400, "corrupt or truncated"),
    "over the size limit": (b"\x00" * 60_000, GOOD, 413, "limit"),
    "too many pixels": (png_bytes(Image.new("L", (1500, 1000))), GOOD, 413, "1500x1000"),
    "decompression bomb": (bomb_png(30_000, 30_000), GOOD, 413, "decompression bomb"),
    "no prompt": (None, {}, 400, "exactly one of"),
    "empty classes": (None, {"classes": " , ,"}, 400, "no class name"),
    "punctuation-only class": (None, {"classes": "red circle, ..."}, 400, "empty after cleaning"),
    "classes and caption": (None, {"classes": "a", "caption": "a b"}, 400, "both were given"),
    "too long prompt": (None, {"classes": ",".join(["red circle"] * 250)}, 400, "limit of 2000"),
    "too many tokens": (None, {"caption": "red " * 290}, 400, "tokens"),
    "phrases without caption": (None, {"classes": "a", "phrases": "a"}, 400, "'phrases' needs"),
    "threshold not a number": (None, {"classes": "a", "threshold": "high"}, 400, "threshold"),
    "threshold out of range": (None, {"classes": "a", "threshold": "1.5"}, 400, "threshold"),
    "masks without mask head": (None, {"classes": "a", "masks": "true"}, 400, "mask head"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_a_json_error_and_the_server_keeps_serving(strict_server, case):
    image, fields, status, words = BAD_REQUESTS[case]
    image = png_bytes(Image.new("RGB", (64, 64), "white")) if image is None else image
    response = detect(strict_server.url, image, **fields)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    assert httpx.get(strict_server.url + "/health").json()["status"] == "ok"


def test_other_bad_requests(strict_server):
    url = strict_server.url
    missing = httpx.post(url + "/detect", data={"classes": "a"})
    assert missing.status_code == 400 and "'image'" in missing.json()["error"]
    as_json = httpx.post(url + "/detect", json={"classes": "a"})
    assert as_json.status_code == 400 and "error" in as_json.json()
    nowhere = httpx.get(url + "/nowhere")
    assert nowhere.status_code == 404 and "no such endpoint" in nowhere.json()["error"]
    wrong_method = httpx.get(url + "/detect")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    for endpoint, head in (("ask", "VQA head"), ("caption", "captioning head")):
        response = httpx.post(url + "/" + endpoint, data={"question": "what colour?"})
        assert response.status_code == 501 and head in response.json()["error"]
    # after all of them: still healthy and still answering
    assert httpx.get(url + "/health").json()["status"] == "ok"
    assert detect(url, png_bytes(Image.new("RGB", (64, 64))), classes="red circle").status_code == 200


class GatedPredictor:
    """The real predictor behind a gate: predict() waits until the test opens it; records batch sizes."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.model, self.device, self.mask_head = predictor.model, predictor.device, None
        self.gate = threading.Event()
        self.sizes: list[int] = []

    def predict(self, images, **kwargs):
        self.gate.wait(timeout=60)
        self.sizes.append(len(images))
        return self.predictor.predict(images, **kwargs)


def wait_for(url: str, key: str, value: int) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(url + "/health").json()[key] != value:
        assert time.monotonic() < deadline, f"/health never showed {key} = {value}"
        time.sleep(0.02)


def test_concurrent_requests_form_batches_and_a_full_queue_answers_503(demo_predictor):
    gated = GatedPredictor(demo_predictor)
    app = create_app(gated, max_batch=4, max_wait_ms=50, max_queue=4)
    image = EXAMPLE.read_bytes()
    with BackgroundServer(app) as server, ThreadPoolExecutor(8) as pool:
        first = pool.submit(detect, server.url, image, classes="red circle")
        wait_for(server.url, "running", 1)  # the worker holds the first request
        queued = [pool.submit(detect, server.url, image, classes="red circle") for _ in range(4)]
        wait_for(server.url, "queued", 4)  # the queue is full
        refused = detect(server.url, image, classes="red circle")
        assert refused.status_code == 503 and "busy" in refused.json()["error"]
        assert refused.headers["retry-after"] == "1"
        gated.gate.set()
        responses = [first.result()] + [f.result() for f in queued]
        assert [r.status_code for r in responses] == [200] * 5
        assert all(r.json() == responses[0].json() for r in responses)
        stats = httpx.get(server.url + "/health").json()["stats"]
    assert gated.sizes == [1, 4]  # the four waiting requests went through as one batch
    assert stats["batch_sizes"] == {"1": 1, "4": 1} and stats["max_batch_size"] == 4
    assert stats["rejected_queue_full"] == 1 and stats["completed"] == 5


def test_requests_with_different_prompts_in_one_batch(demo_predictor):
    gated = GatedPredictor(demo_predictor)
    app = create_app(gated, max_batch=8, max_wait_ms=50)
    image = EXAMPLE.read_bytes()
    prompts = ["red circle", "blue square", "red circle", "blue square", "green star"]
    with BackgroundServer(app) as server, ThreadPoolExecutor(8) as pool:
        blocker = pool.submit(detect, server.url, image, classes="red circle")
        wait_for(server.url, "running", 1)
        futures = [pool.submit(detect, server.url, image, classes=p) for p in prompts]
        wait_for(server.url, "queued", len(prompts))
        gated.gate.set()
        assert blocker.result().status_code == 200
        for prompt, future in zip(prompts, futures):
            expected = demo_predictor.predict(load_image(EXAMPLE), classes=[prompt])
            expected.source = "image.png"
            assert future.result().json() == expected.to_dict()
    assert sorted(gated.sizes) == [1, 1, 2, 2]  # one predict call per distinct prompt


def test_one_bad_image_in_a_batch_does_not_fail_the_others(demo_predictor):
    gated = GatedPredictor(demo_predictor)
    app = create_app(gated, max_batch=8, max_wait_ms=50)
    good, elongated = EXAMPLE.read_bytes(), png_bytes(Image.new("RGB", (4000, 1), "red"))
    with BackgroundServer(app) as server, ThreadPoolExecutor(8) as pool:
        blocker = pool.submit(detect, server.url, good, classes="red circle")
        wait_for(server.url, "running", 1)
        futures = [pool.submit(detect, server.url, data, classes="red circle") for data in (good, elongated)]
        wait_for(server.url, "queued", 2)
        gated.gate.set()
        assert blocker.result().status_code == 200
        ok, bad = (f.result() for f in futures)
    assert ok.status_code == 200 and ok.json() == blocker.result().json()
    assert bad.status_code == 400 and "too elongated" in bad.json()["error"]


def test_masks_are_returned_as_rle_when_the_model_has_a_mask_head(demo_predictor):
    import torch

    from glip.models.mask_head import MaskHead, MaskHeadConfig
    from glip.predictor import GLIPPredictor

    torch.manual_seed(0)
    config = demo_predictor.model.config
    head = MaskHead(MaskHeadConfig.for_model(config, num_convs=1, conv_channels=16, embed_dim=16))
    predictor = GLIPPredictor(demo_predictor.model, device="cpu", mask_head=head)
    app = create_app(predictor)
    with BackgroundServer(app) as server:
        assert httpx.get(server.url + "/models").json()["tasks"]["masks"] is True
        response = detect(server.url, EXAMPLE.read_bytes(), classes="red circle,purple star", masks="true")
    assert response.status_code == 200, response.text
    expected = predictor.predict(load_image(EXAMPLE), classes=["red circle", "purple star"], masks=True)
    expected.source = "image.png"
    assert response.json() == expected.to_dict()
    assert response.json()["detections"] and all("segmentation" in d for d in response.json()["detections"])


def test_ask_and_caption_with_the_bundled_glipv2_model():
    """POST /ask and /caption with demo_v2: the predictor's own answers, batched requests, bad requests 4xx."""
    from glip.predictor import GLIPPredictor
    from glip.weights.demo import demo_v2_model_available

    if not demo_v2_model_available():
        pytest.skip("the bundled GLIPv2 demo model is missing")
    predictor = GLIPPredictor.from_pretrained("demo_v2", device="cpu")
    question = "what colour is the star?"
    with BackgroundServer(create_app(predictor, max_wait_ms=200)) as server:
        url = server.url
        assert httpx.get(url + "/models").json()["tasks"] == {
            "detect": True,
            "masks": True,
            "ask": True,
            "caption": True,
        }
        files = {"image": ("shapes.png", EXAMPLE.read_bytes(), "image/png")}
        with ThreadPoolExecutor(3) as pool:  # arriving together: one ask call for the three
            answers = list(
                pool.map(
                    lambda _: httpx.post(url + "/ask", files=files, data={"question": question}, timeout=60),
                    range(3),
                )
            )
        caption = httpx.post(
            url + "/caption", files=files, data={"beams": "2", "max_length": "12"}, timeout=60
        )
        bad = {
            "no question": httpx.post(url + "/ask", files=files, data={}, timeout=60),
            "long question": httpx.post(
                url + "/ask", files=files, data={"question": "what " * 1000}, timeout=60
            ),
            "bad threshold": httpx.post(
                url + "/ask", files=files, data={"question": "what?", "threshold": "2"}
            ),
            "bad beams": httpx.post(url + "/caption", files=files, data={"beams": "0"}, timeout=60),
            "not an image": httpx.post(url + "/caption", files={"image": ("x.png", b"nope", "image/png")}),
        }
        healthy = httpx.get(url + "/health").json()
    expected = predictor.ask(load_image(EXAMPLE), question, threshold=0.3).to_dict()
    expected["file"] = "shapes.png"
    for response in answers:
        assert response.status_code == 200, response.text
        assert response.json() == expected
    assert caption.status_code == 200, caption.text
    want = predictor.caption(load_image(EXAMPLE), beams=2, max_length=12).to_dict()
    assert caption.json()["caption"] == want["caption"] and len(caption.json()["words"]) == len(want["words"])
    for name, response in bad.items():
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
        assert "error" in response.json()
    assert healthy["status"] == "ok" and healthy["stats"]["failed"] == 0
