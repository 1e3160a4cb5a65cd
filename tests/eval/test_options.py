"""Evaluation run options: metrics, detections and settings of the tiny dataset pinned (they must not move
when the way the options are passed changes)."""

from __future__ import annotations

import json

import pytest

from glip.eval import evaluate_coco

pytest.importorskip("pycocotools")

PINNED_METRICS = {
    "AP": 0.0,
    "AP50": 0.0,
    "AP75": 0.0,
    "APs": 0.0,
    "APm": 0.0,
    "APl": -1.0,
    "AR1": 0.0,
    "AR10": 0.0,
    "AR100": 0.0,
    "ARs": 0.0,
    "ARm": 0.0,
    "ARl": -1.0,
}
#: (keyword options, num_images, num_detections, sum of scores, detections per category, settings)
PINNED = [
    (
        {},
        5,
        500,
        266.7547800540924,
        {1: 288, 3: 71, 7: 141},
        {"num_prompts": 1, "chunk_size": None, "detections_per_img": 100, "batch_size": 1},
    ),
    (
        {"detections_per_img": 7, "chunk_size": 1, "max_images": 4, "batch_size": 2},
        4,
        84,
        45.50177139043808,
        {1: 28, 3: 28, 7: 28},
        {"num_prompts": 3, "chunk_size": 1, "detections_per_img": 7, "batch_size": 2},
    ),
]


@pytest.mark.parametrize("keywords, num_images, num_dets, score_sum, per_category, settings", PINNED)
def test_evaluate_coco_metrics_are_pinned(
    tmp_path, coco_set, tiny_random_model, keywords, num_images, num_dets, score_sum, per_category, settings
):
    ann, images = coco_set
    out = tmp_path / "out"
    result = evaluate_coco(
        tiny_random_model, ann, images, progress=False, out_dir=out, num_examples=0, resume=False, **keywords
    )
    assert result.metrics == {**PINNED_METRICS, "num_images": num_images, "num_detections": num_dets}
    predictions = json.loads((out / "predictions.coco.json").read_text())
    assert sum(p["score"] for p in predictions) == pytest.approx(score_sum, rel=1e-12)
    assert {c: sum(p["category_id"] == c for p in predictions) for c in (1, 3, 7)} == per_category
    assert {k: result.settings[k] for k in settings} == settings
    assert result.settings["backend"] == "pycocotools" and result.settings["model"] == "tiny_random"
