"""glip.eval.options: the frozen run options of an evaluation, their checks, and that passing them as one
object leaves the metrics, detections and settings of the tiny dataset where the keyword calls had them
(pinned before the change)."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from glip.eval import EvalError, EvalOptions, EvalOptionsError, evaluate_coco, evaluate_flickr, evaluate_lvis


def test_defaults_are_documented_values():
    options = EvalOptions()
    assert dataclasses.asdict(options) == {
        "batch_size": 1,
        "max_images": None,
        "detections_per_img": None,
        "device": None,
        "out_dir": None,
        "resume": True,
        "progress": True,
        "report": True,
        "num_examples": 8,
        "model_name": None,
        "backend": "pycocotools",
        "masks": False,
    }
    for field in dataclasses.fields(EvalOptions):  # each field is described in the class docstring
        assert f"    {field.name}:" in EvalOptions.__doc__, field.name


def test_options_are_frozen_and_replace_makes_a_checked_copy():
    options = EvalOptions(batch_size=4, out_dir="results")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.batch_size = 2  # type: ignore[misc]
    changed = options.replace(max_images=3)
    assert (changed.batch_size, changed.max_images, changed.out_dir) == (4, 3, "results")
    assert options.max_images is None
    assert pickle.loads(pickle.dumps(options)) == options  # travels to other processes
    assert hash(options) == hash(EvalOptions(batch_size=4, out_dir="results"))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"batch_size": 0}, r"EvalOptions\.batch_size must be an integer >= 1, got 0"),
        ({"batch_size": 2.0}, r"batch_size must be an integer >= 1, got 2\.0"),
        (
            {"detections_per_img": -1},
            r"EvalOptions\.detections_per_img must be an integer >= 1 or None, got -1",
        ),
        ({"detections_per_img": 0}, r"detections_per_img must be an integer >= 1 or None, got 0"),
        ({"max_images": 0}, r"EvalOptions\.max_images must be an integer >= 1 or None, got 0"),
        ({"num_examples": -1}, r"EvalOptions\.num_examples must be an integer >= 0, got -1"),
        ({"resume": "no"}, r"EvalOptions\.resume must be True or False, got 'no'"),
        ({"backend": "detectron"}, r"EvalOptions\.backend must be 'pycocotools' or 'faster-coco-eval'"),
        ({"out_dir": 3}, r"EvalOptions\.out_dir must be a folder path or None, got 3"),
    ],
)
def test_bad_values_are_one_clear_error(changes, message):
    with pytest.raises(EvalOptionsError, match=message):
        EvalOptions(**changes)
    with pytest.raises(EvalOptionsError, match=message):
        EvalOptions().replace(**changes)


def test_unknown_fields_and_positional_arguments_are_one_clear_error():
    with pytest.raises(
        EvalOptionsError, match=r"unknown EvalOptions field\(s\) 'batchsize'; known: batch_size, "
    ):
        EvalOptions(batchsize=4)  # type: ignore[call-arg]
    with pytest.raises(EvalOptionsError, match="unknown EvalOptions field"):
        EvalOptions().replace(chunk_size=40)  # a task's protocol setting, not a run option
    with pytest.raises(EvalOptionsError, match="keyword arguments only"):
        EvalOptions(4)  # type: ignore[misc]
    assert issubclass(EvalOptionsError, EvalError) and issubclass(EvalOptionsError, ValueError)


def test_masks_are_refused_where_they_do_not_apply(coco_set, tiny_random_model):
    ann, images = coco_set
    with pytest.raises(EvalOptionsError, match="masks=True"):
        evaluate_lvis(tiny_random_model, ann, images, EvalOptions(masks=True))
    with pytest.raises(EvalOptionsError, match="masks=True"):
        evaluate_flickr(tiny_random_model, ann, images, EvalOptions(masks=True))
    with pytest.raises(EvalOptionsError, match="mask_head is used with masks"):
        evaluate_coco(tiny_random_model, ann, images, EvalOptions(), mask_head=object())


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
#: (options, chunk_size, num_images, num_detections, sum of scores, detections per category, settings),
#: measured with the keyword calls ``evaluate_coco(..., progress=False, out_dir=..., num_examples=0,
#: resume=False)`` and ``(..., detections_per_img=7, chunk_size=1, max_images=4, batch_size=2)``.
PINNED = [
    (
        {},
        None,
        5,
        500,
        266.7547800540924,
        {1: 288, 3: 71, 7: 141},
        {"num_prompts": 1, "chunk_size": None, "detections_per_img": 100, "batch_size": 1},
    ),
    (
        {"detections_per_img": 7, "max_images": 4, "batch_size": 2},
        1,
        4,
        84,
        45.50177139043808,
        {1: 28, 3: 28, 7: 28},
        {"num_prompts": 3, "chunk_size": 1, "detections_per_img": 7, "batch_size": 2},
    ),
]


@pytest.mark.parametrize(
    "changes, chunk_size, num_images, num_dets, score_sum, per_category, settings", PINNED
)
def test_evaluate_coco_with_options_gives_the_pinned_metrics(
    tmp_path,
    coco_set,
    tiny_random_model,
    changes,
    chunk_size,
    num_images,
    num_dets,
    score_sum,
    per_category,
    settings,
):
    pytest.importorskip("pycocotools")
    ann, images = coco_set
    out = tmp_path / "out"
    options = EvalOptions(progress=False, out_dir=out, num_examples=0, resume=False, **changes)
    result = evaluate_coco(tiny_random_model, ann, images, options, chunk_size=chunk_size)
    assert result.metrics == {**PINNED_METRICS, "num_images": num_images, "num_detections": num_dets}
    predictions = json.loads((out / "predictions.coco.json").read_text())
    # bits of the float32 scores move with torch's version and the CPU kernels; 1e-6 still pins the values
    assert sum(p["score"] for p in predictions) == pytest.approx(score_sum, rel=1e-6)
    assert {c: sum(p["category_id"] == c for p in predictions) for c in (1, 3, 7)} == per_category
    assert {k: result.settings[k] for k in settings} == settings
    assert result.settings["backend"] == "pycocotools" and result.settings["model"] == "tiny_random"
