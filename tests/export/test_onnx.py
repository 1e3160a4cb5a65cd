"""glip.export.onnx: the exported graph in onnxruntime equals eager PyTorch, and so do the final detections.

One export of the ``tiny_random`` preset (batch 2, 256x320, 12 tokens) is checked on sizes and prompt lengths
it did not see. The export itself takes minutes on 2 CPU cores, hence ``slow``.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from glip.config import get_preset
from glip.export.onnx import ExportableGLIP, ExportError, OnnxGLIP, export_mode, to_onnx
from glip.models.glip import build_model
from glip.predictor import GLIPPredictor
from glip.preprocess import normalize, pad_batch, resize_image
from glip.text.tokenizer import tokenize_captions

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.slow


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = get_preset("tiny_random")
    # random weights score every phrase ~0.01: no candidate threshold and no top-k cuts (near-ties at a cut
    # could swap which of two candidates survives), so that there are many detections to compare
    post = dataclasses.replace(
        config.postprocess, pre_nms_thresh=0.0, pre_nms_top_n=100_000, detections_per_img=10_000
    )
    config = dataclasses.replace(config, postprocess=post)
    model = build_model(config).eval()
    with torch.no_grad():  # spread the grounding scores so that they are not all tied near the prior
        for name, param in model.head.named_parameters():
            if name.endswith("text_bias"):
                param.normal_(0.0, 1.0)
            elif name.endswith("bias0"):
                param.zero_()
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):  # type: ignore[no-untyped-def]
    model = tiny_model()
    directory = tmp_path_factory.mktemp("onnx")
    to_onnx(model, directory, image_size=(256, 320), num_tokens=12)
    return model, directory


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
            order_w, order_g = want.scores.argsort(descending=True), got.scores.argsort(descending=True)
            torch.testing.assert_close(got.scores[order_g], want.scores[order_w], rtol=0, atol=1e-4)
            torch.testing.assert_close(got.labels[order_g], want.labels[order_w])
            torch.testing.assert_close(got.boxes[order_g], want.boxes[order_w], rtol=0, atol=1e-3)
            total += len(want)
    return total


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
