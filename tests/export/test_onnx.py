"""glip.export.onnx: the exported graph in onnxruntime equals eager PyTorch, and so do the final detections.

Exports, each checked on image sizes, batch sizes and prompt lengths it did not see: ``tiny_random_small``
(the ``tiny_random`` preset with Swin depths (1, 1, 2, 1) and one DyHead block, random weights, no extra
package; batch 2, 256x320, 12 tokens: every code path of the full preset, shifted windows included, in half
the graph, so the export that ``make test`` runs takes half the time: 327 s against 629 s on 2 cores on
2026-12-07; it runs in a background process beside the rest of the suite, tests/export/conftest.py), and with
``GLIP_SLOW_TESTS=1`` also ``tiny_random`` itself and the ``tiny`` preset (the bundled demo
model, EfficientNet-Lite0 + MiniLM; needs the ``tiny`` extra; batch 2, 320x320, 16 tokens). Each export takes
minutes on 2 CPU cores, hence ``slow``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from glip.export.onnx import (
    ExportableGLIP,
    ExportError,
    OnnxGLIP,
    OnnxModel,
    export_mode,
    level_shapes,
    to_onnx,
)
from glip.predictor import GLIPPredictor, Prediction
from glip.preprocess import normalize, pad_batch, resize_image
from glip.text.tokenizer import tokenize_captions
from glip.weights.demo import DEMO_EXAMPLES_DIR, DEMO_PROMPT, demo_model_available
from tests.export.onnx_models import (
    BACKGROUND,
    BACKGROUND_EXPORT,
    EXPORTS,
    SLOW,
    demo_model,
    export,
    tiny_model,
)

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=list(EXPORTS) if SLOW else [BACKGROUND])
def exported(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    """(model, export folder): the background export of conftest.py, or (the others) exported here."""
    if request.param == "tiny" and not demo_model_available():
        pytest.skip("the demo model (tiny preset) needs the tiny extra: pip install '.[tiny]'")
    job = request.config.stash.get(BACKGROUND_EXPORT, None)
    if request.param == BACKGROUND and job is not None:
        directory = job.wait()
        model = EXPORTS[BACKGROUND][0]()
        model.load_state_dict(torch.load(directory / "weights.pt", weights_only=True))
        return model, directory
    directory = tmp_path_factory.mktemp(f"onnx-{request.param}")
    return export(request.param, directory), directory


def check_raw(model, runner: OnnxGLIP) -> None:  # type: ignore[no-untyped-def]
    """Unseen shapes: batch 1 and 3, 384x224 / 160x480, 7 and 30 tokens (one prompt padded)."""
    wrapper = ExportableGLIP(model).eval()
    generator = torch.Generator().manual_seed(1)
    for shape, length in (((1, 3, 384, 224), 7), ((3, 3, 160, 480), 30)):
        images = torch.randn(*shape, generator=generator)
        ids = torch.randint(1000, 2000, (shape[0], length), generator=generator)
        mask = torch.ones(shape[0], length, dtype=torch.long)
        mask[0, length - 2 :] = 0  # padding inside the batch, the longest prompt is full
        with torch.no_grad():
            reference = wrapper(images, ids, mask)
        got = runner.forward(images, ids, mask)
        outputs = [*got["token_logits"], *got["box_regression"], *got["centerness"]]
        assert len(outputs) == len(reference)
        for out, ref in zip(outputs, reference):
            assert out.shape == ref.shape
            np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-3, atol=1e-4)


def check_detections(model, runner: OnnxGLIP) -> int:  # type: ignore[no-untyped-def]
    """The eager predictor's per-batch detections vs the ONNX ones, on an image size the export did not see."""
    predictor = GLIPPredictor(model, device="cpu")
    cfg = model.config.input
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (300, 420, 3), dtype=np.uint8)) for _ in range(2)]
    tensors = [
        normalize(resize_image(im, cfg.min_size, cfg.max_size), cfg.pixel_mean, cfg.pixel_std, cfg.to_bgr255)
        for im in images
    ]
    batch = pad_batch(tensors, cfg.size_divisibility)
    total = 0
    for prompt in predictor.class_prompts(["red circle", "blue square", "a green triangle"]):
        eager = predictor._detect_batch(batch, [prompt])
        tokens = tokenize_captions([prompt.caption], max_length=predictor.max_query_len, pad_to_max=False)
        ours = runner.detect_batch(batch, tokens.input_ids, tokens.attention_mask, prompt.label_to_tokens)
        for want, got in zip(eager, ours):
            assert len(got) == len(want)
            total += assert_matched(
                got.labels, got.scores, got.boxes, want.labels, want.scores, want.boxes, 1e-3
            )
    return total


def assert_matched(labels, scores, boxes, eager_labels, eager_scores, eager_boxes, box_atol: float) -> int:  # type: ignore[no-untyped-def]
    """A one-to-one match of detections: same label, score within 1e-4, every box coordinate within
    ``box_atol``. (Matched, not compared in score order: a random model has many near-equal scores whose order
    may differ by float rounding, e.g. between the eager CPU deformable conv (gather) and the exported one
    (GridSample).) Returns how many."""
    assert torch.equal(labels.sort().values, eager_labels.sort().values)
    for label in eager_labels.unique().tolist():
        mine, theirs = (torch.nonzero(lab == label).reshape(-1) for lab in (labels, eager_labels))
        order = scores[mine].argsort()  # ours by score: each eager detection's candidates are a score window
        sorted_scores, sorted_boxes = scores[mine][order].numpy(), boxes[mine][order].numpy()
        low = np.searchsorted(sorted_scores, eager_scores[theirs].numpy() - 1e-4, side="left")
        high = np.searchsorted(sorted_scores, eager_scores[theirs].numpy() + 1e-4, side="right")
        used = np.zeros(len(mine), dtype=bool)
        their_boxes, their_scores = eager_boxes[theirs].numpy(), eager_scores[theirs].numpy()
        for column, (lo, hi) in enumerate(zip(low.tolist(), high.tolist())):  # greedy one-to-one matching
            ok = (np.abs(sorted_boxes[lo:hi] - their_boxes[column]).max(axis=1) <= box_atol) & ~used[lo:hi]
            assert ok.any(), f"eager detection {int(theirs[column])} (label {label}) has no match"
            # the closest score among them (many boxes are the same clamped whole-image box)
            gaps = np.where(ok, np.abs(sorted_scores[lo:hi] - their_scores[column]), np.inf)
            used[lo + int(gaps.argmin())] = True
    return len(eager_labels)


def example_images() -> list[Image.Image]:
    """Two sizes (so two padded-size groups) neither export saw: 320x320 (-> 320x320) and 200x360 (-> 288x512)."""
    a, b, c = sorted(DEMO_EXAMPLES_DIR.glob("*.png"))[:3]  # the bundled examples, whichever they are
    first = Image.open(b).convert("RGB")
    second = Image.open(c).convert("RGB").resize((360, 200))
    third = Image.open(a).convert("RGB")
    return [first, second, third]


def assert_same_predictions(got: list[Prediction], want: list[Prediction]) -> int:
    """Same count per image and a one-to-one match of detections: same label, score within 1e-4, box within
    0.01 px. (Matched, not compared in score order: a random model has many near-equal scores whose order may
    differ by float rounding.)"""
    total = 0
    for ours, eager in zip(got, want, strict=True):
        assert ours.names == eager.names and ours.image_size == eager.image_size
        assert len(ours) == len(eager)
        total += assert_matched(
            ours.labels, ours.scores, ours.boxes, eager.labels, eager.scores, eager.boxes, 1e-2
        )
    return total


def test_predictor_from_onnx_gives_the_eager_detections(exported) -> None:  # type: ignore[no-untyped-def]
    """GLIPPredictor.from_onnx runs the predictor's own prompts, grouping and post-processing: the final
    Predictions (boxes in original-image pixels) equal the eager predictor's, for classes and a caption."""
    model, directory = exported
    eager = GLIPPredictor(model, device="cpu")
    onnx = GLIPPredictor.from_onnx(directory)
    assert isinstance(onnx.model, OnnxModel) and onnx.model.config == model.config
    images = example_images()
    classes = DEMO_PROMPT.split(",")
    threshold = 0.0 if model.config.name.startswith("tiny_random") else 0.3
    total = assert_same_predictions(
        onnx.predict(images, classes=classes, threshold=threshold, batch_size=3),
        eager.predict(images, classes=classes, threshold=threshold, batch_size=3),
    )
    caption, phrases = "a red circle next to a blue square", ["a red circle", "a blue square"]
    total += assert_same_predictions(
        onnx.predict(images[:2], caption=caption, phrases=phrases, threshold=threshold),
        eager.predict(images[:2], caption=caption, phrases=phrases, threshold=threshold),
    )
    assert total > 0


def test_onnxruntime_matches_eager_on_unseen_shapes(exported) -> None:  # type: ignore[no-untyped-def]
    model, directory = exported
    runner = OnnxGLIP(directory)
    check_raw(model, runner)
    info = json.loads((directory / "onnx.json").read_text())
    assert (
        info["tokenizer"] == "bert-base-uncased" and info["max_query_len"] == model.config.text.max_query_len
    )
    assert runner.config == model.config


def test_detections_match_the_eager_predictor(exported) -> None:  # type: ignore[no-untyped-def]
    model, directory = exported
    assert check_detections(model, OnnxGLIP(directory)) > 0


def test_export_mode_restores_and_keeps_outputs() -> None:
    import glip.memory
    import glip.models.dyhead as dyhead

    model = tiny_model()
    wrapper = ExportableGLIP(model)
    images = torch.randn(1, 3, 192, 224)
    ids = torch.randint(1000, 2000, (1, 9))
    mask = torch.ones(1, 9, dtype=torch.long)
    before = (glip.memory.RELEASE, dyhead.DEFORM_COLUMNS_MAX_ELEMENTS, model.trim_text_padding)
    with torch.no_grad():
        reference = wrapper(images, ids, mask)
        with export_mode(model):
            assert model.trim_text_padding is False
            inside = wrapper(images, ids, mask)
    assert (glip.memory.RELEASE, dyhead.DEFORM_COLUMNS_MAX_ELEMENTS, model.trim_text_padding) == before
    for a, b in zip(inside, reference):
        assert torch.equal(a, b)


def test_bad_arguments_are_clear_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = tiny_model()
    with pytest.raises(ExportError, match="multiple of 32"):
        to_onnx(model, tmp_path, image_size=(250, 320))
    with pytest.raises(ExportError, match="opset"):
        to_onnx(model, tmp_path, opset=13)
    with pytest.raises(ExportError, match="not an exported glip model"):
        OnnxGLIP(tmp_path)
    with pytest.raises(ExportError, match="not an exported glip model"):
        GLIPPredictor.from_onnx(tmp_path)
    with pytest.raises(ExportError, match="no mask head"):
        GLIPPredictor.from_onnx(tmp_path, mask_head=torch.nn.Identity())


@pytest.mark.parametrize("build", [tiny_model, demo_model], ids=["tiny_random", "tiny"])
def test_deferred_level_shapes_are_the_eager_fpn_shapes(build) -> None:  # type: ignore[no-untyped-def]
    """OnnxModel.encode_images computes the pyramid's shapes (for the anchors) without running the graph."""
    if build is demo_model and not demo_model_available():
        pytest.skip("the demo model (tiny preset) needs the tiny extra")
    model = build()
    strides = tuple(model.config.anchors.strides)
    for height, width in ((160, 160), (192, 480), (320, 512), (800, 1344)):
        with torch.no_grad():
            fpn = model.encode_images(torch.zeros(1, 3, height, width))
        assert level_shapes(height, width, strides) == [tuple(f.shape[-2:]) for f in fpn]


def test_glip_serve_with_the_onnxruntime_runtime(exported) -> None:  # type: ignore[no-untyped-def]
    """glip serve --model DIR --runtime onnxruntime: POST /detect answers with the eager predictor's record."""
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from glip.serve.app import create_app, load_served_predictor
    from glip.serve.server import BackgroundServer

    model, directory = exported
    predictor, name, _ = load_served_predictor(str(directory), None, "auto", "fp32", runtime="onnxruntime")
    assert isinstance(predictor.model, OnnxModel) and name == str(directory)
    with pytest.raises(ValueError, match="CPU in fp32"):
        load_served_predictor(str(directory), None, "cuda", "fp32", runtime="onnxruntime")
    example = DEMO_EXAMPLES_DIR / "test_000002.png"
    with BackgroundServer(create_app(predictor, max_wait_ms=5)) as server:
        response = httpx.post(
            server.url + "/detect",
            files={"image": ("shapes.png", example.read_bytes(), "image/png")},
            data={"classes": DEMO_PROMPT, "threshold": "0.3"},
            timeout=120,
        )
    assert response.status_code == 200, response.text
    eager = GLIPPredictor(model, device="cpu").predict(example, classes=DEMO_PROMPT.split(","), threshold=0.3)
    got = response.json()
    assert got["file"] == "shapes.png" and (got["width"], got["height"]) == eager.image_size
    served = Prediction(
        boxes=torch.tensor([d["box_xyxy"] for d in got["detections"]]).reshape(-1, 4),
        scores=torch.tensor([d["score"] for d in got["detections"]]),
        labels=torch.tensor([d["label"] for d in got["detections"]], dtype=torch.long),
        phrases=[d["phrase"] for d in got["detections"]],
        names=eager.names,
        image_size=(got["width"], got["height"]),
    )
    assert assert_same_predictions([served], [eager]) == len(eager)
