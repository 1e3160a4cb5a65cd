"""The Hugging Face ``zero-shot-object-detection`` convention of ``GLIPPredictor.__call__``, compared with
transformers' own pipeline on a tiny randomly initialised Grounding DINO built offline (a Swin of 16
channels, a one-layer BERT, the bundled BERT vocabulary): every call form the pipeline accepts gives the
same nesting, keys, types and label strings, and box values are the pipeline's (``_get_bounding_box``:
truncated, not rounded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import glip
from glip.predictor import GLIPPredictor
from tests.test_predictor import make_image, model, one_thread  # noqa: F401  (fixtures)

transformers = pytest.importorskip("transformers")
VOCAB = Path(glip.__file__).parent / "assets" / "bert-base-uncased-vocab.txt"


@pytest.fixture(scope="module")
def predictor(model: glip.GLIP) -> GLIPPredictor:
    return GLIPPredictor(model)


@pytest.fixture(scope="module")
def hf_pipeline():
    """transformers' pipeline around a tiny random Grounding DINO; nothing is downloaded."""
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        SwinConfig,
        pipeline,
    )

    backbone = SwinConfig(
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        image_size=64,
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=256,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=10,
        num_feature_levels=3,
        encoder_n_points=2,
        decoder_n_points=2,
        use_timm_backbone=False,
        use_pretrained_backbone=False,
    )
    torch.manual_seed(0)
    detector = GroundingDinoForObjectDetection(config).eval()
    return pipeline(
        "zero-shot-object-detection",
        model=detector,
        tokenizer=BertTokenizerFast(vocab_file=str(VOCAB)),
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}),
    )


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [make_image(120, 160, 0), make_image(100, 90, 1)]


def shape_of(result):
    """The structure of a pipeline result: nesting, keys and value types, label strings (not values)."""
    if isinstance(result, list) and result and isinstance(result[0], list):
        return ["per-image", [shape_of(r) for r in result]]
    assert isinstance(result, list)
    for item in result:
        assert set(item) == {"score", "label", "box"}
        assert isinstance(item["score"], float) and isinstance(item["label"], str)
        assert list(item["box"]) == ["xmin", "ymin", "xmax", "ymax"]
        assert all(type(v) is int for v in item["box"].values())
    assert [r["score"] for r in result] == sorted((r["score"] for r in result), reverse=True)
    return ["one image", sorted({r["label"] for r in result})]


CALLS = {
    "image + label list": lambda imgs: ((imgs[0],), {"candidate_labels": ["cat", "dog"]}),
    "image + comma string": lambda imgs: ((imgs[0],), {"candidate_labels": "cat, dog"}),
    "text_queries": lambda imgs: ((imgs[0],), {"text_queries": ["cat", "dog"]}),
    "dict": lambda imgs: (({"image": imgs[0], "candidate_labels": ["cat"]},), {}),
    "list of images, shared labels": lambda imgs: ((imgs,), {"candidate_labels": ["cat", "dog"]}),
    "list of images, per-image labels": lambda imgs: (
        (imgs,),
        {"candidate_labels": [["cat"], ["dog", "ball"]]},
    ),
    "list of dicts": lambda imgs: (
        (
            [
                {"image": imgs[0], "candidate_labels": ["cat", "dog"]},
                {"image": imgs[1], "candidate_labels": "a,b"},
            ],
        ),
        {},
    ),
}


@pytest.mark.parametrize("form", list(CALLS))
def test_call_forms_have_the_pipeline_structure(predictor, hf_pipeline, images, form):
    args, kwargs = CALLS[form](images)
    ours = predictor(*args, **kwargs, threshold=0.0, top_k=50)
    theirs = hf_pipeline(*args, **kwargs, threshold=0.0, top_k=50)
    assert shape_of(ours) == shape_of(theirs)


def test_a_generator_of_dicts(predictor, images):
    requests = ({"image": img, "candidate_labels": ["cat"]} for img in images)
    out = predictor(requests, threshold=0.0)
    assert len(out) == 2 and out[1] == predictor(images[1], candidate_labels=["cat"], threshold=0.0)


def test_box_values_are_the_pipelines(predictor, hf_pipeline, images):
    """Each box dict equals what the pipeline's own ``_get_bounding_box`` makes of our float box."""
    result = predictor.predict(images[0], classes=["cat", "dog"], threshold=0.0)
    out = predictor(images[0], candidate_labels=["cat", "dog"], threshold=0.0)
    assert len(out) == len(result) > 10
    assert [o["box"] for o in out] == [hf_pipeline._get_bounding_box(box) for box in result.boxes]
    assert [o["score"] for o in out] == [s.item() for s in result.scores]
    fractions = result.boxes - result.boxes.floor()
    assert bool((fractions > 0.5).any()), "no box coordinate where rounding and truncation differ"


def test_list_results_equal_single_calls_and_bad_lists(predictor, images):
    both = predictor(images, candidate_labels=[["cat"], ["dog"]], threshold=0.2, batch_size=2)
    assert both == [
        predictor(images[0], candidate_labels=["cat"], threshold=0.2),
        predictor(images[1], candidate_labels=["dog"], threshold=0.2),
    ]
    with pytest.raises(ValueError, match="Got 2 images but 1 candidate label lists"):
        predictor(images, candidate_labels=[["cat"]])
    with pytest.raises(ValueError, match="lacks candidate_labels"):
        predictor([{"image": images[0]}])
    with pytest.raises(ValueError, match="give candidate_labels"):
        predictor(images[0])


def test_a_url(predictor, images, tmp_path):
    import functools
    import http.server
    import threading

    images[0].save(tmp_path / "a.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/a.png"
        from_url = predictor(url, candidate_labels=["cat"], threshold=0.2, timeout=10)
        assert from_url == predictor(np.asarray(images[0]), candidate_labels=["cat"], threshold=0.2)
        assert predictor([{"image": url, "candidate_labels": "cat"}], threshold=0.2) == [from_url]
    finally:
        server.shutdown()
        server.server_close()
