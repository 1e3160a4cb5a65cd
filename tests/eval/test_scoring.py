"""Scores equal pycocotools / lvis run directly on the same files; the Fixed-AP selection; predictions
files in both formats."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from glip.eval import COCO_METRICS, fixed_ap_selection, load_coco_dataset, score_coco, score_lvis
from glip.eval.data import load_detection_predictions
from glip.eval.lvis import lvis_numpy_compat
from glip.eval.odinw import score_detection_file
from glip.eval.options import EvalOptions

from .conftest import random_detections, random_gt, write_json

pytest.importorskip("pycocotools")


def direct_cocoeval(ann: Path, dets: Path | list, img_ids=None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        dt = gt.loadRes(str(dets) if isinstance(dets, Path) else dets) if dets else COCO()
        evaluator = COCOeval(gt, dt, "bbox")
        if img_ids is not None:
            evaluator.params.imgIds = img_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def per_category_ap(precision: np.ndarray, k: int) -> float:
    """The official summarize_per_category: mean of precision[:, :, k, area all, maxDets 100] > -1."""
    p = precision[:, :, k, 0, -1] if precision.ndim == 5 else precision[:, :, k, 0]
    return float(np.mean(p[p > -1])) if (p > -1).any() else -1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_metrics_equal_pycocotools(tmp_path, seed):
    gt = random_gt(seed)
    dets = random_detections(gt, seed + 10)
    ann = write_json(tmp_path / "gt.json", gt)
    res = write_json(tmp_path / "dets.json", dets)
    assert any(a["iscrowd"] for a in gt["annotations"])  # crowd boxes
    assert any(
        not any(a["image_id"] == im["id"] for a in gt["annotations"]) for im in gt["images"]
    )  # empty images
    ours = score_coco(ann, dets)
    direct = direct_cocoeval(ann, res)
    assert [ours.metrics[k] for k in COCO_METRICS] == [float(v) for v in direct.stats]
    rows = {r["id"]: r for r in ours.per_category}
    for k, cat in enumerate(direct.params.catIds):
        assert rows[cat]["AP"] == per_category_ap(direct.eval["precision"], k)
    assert rows[6]["num_detections"] == 0 and rows[6]["AP"] == 0.0  # GT, never predicted
    assert rows[9]["num_gt"] == 0 and rows[9]["AP"] == -1.0  # predicted, no GT


def test_coco_subset_of_images_and_no_detections(tmp_path):
    gt = random_gt(3)
    dets = random_detections(gt, 4)
    ann = write_json(tmp_path / "gt.json", gt)
    ours = score_coco(ann, dets, image_ids=[1, 2, 3, 4])
    direct = direct_cocoeval(ann, dets and [dict(d) for d in dets], img_ids=[1, 2, 3, 4])
    assert [ours.metrics[k] for k in COCO_METRICS] == [float(v) for v in direct.stats]
    empty = score_coco(ann, [])
    assert [empty.metrics[k] for k in COCO_METRICS] == [float(v) for v in direct_cocoeval(ann, []).stats]
    assert empty.metrics["AP"] == 0.0


def test_faster_coco_eval_gives_the_same_numbers(tmp_path):
    pytest.importorskip("faster_coco_eval")
    gt = random_gt(5)
    dets = random_detections(gt, 6)
    ann = write_json(tmp_path / "gt.json", gt)
    slow = score_coco(ann, dets, backend="pycocotools")
    fast = score_coco(ann, dets, backend="faster-coco-eval")
    for key in COCO_METRICS:
        assert fast.metrics[key] == pytest.approx(slow.metrics[key], abs=1e-12), key
    for a, b in zip(slow.per_category, fast.per_category):
        assert a["AP"] == pytest.approx(b["AP"], abs=1e-12)


def test_unknown_backend_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown backend"):
        score_coco(random_gt(0), [], backend="nope")


# ----------------------------------------------------------------------------------------------- LVIS


def direct_lvis(ann: Path, dets: list, max_dets: int):
    from lvis import LVIS, LVISEval, LVISResults

    with lvis_numpy_compat():
        gt = LVIS(str(ann))
        results = LVISResults(gt, [dict(d, bbox=list(d["bbox"])) for d in dets], max_dets=max_dets)
        evaluator = LVISEval(gt, results, iou_type="bbox")
        evaluator.params.max_dets = max_dets
        evaluator.run()
    return evaluator


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the lvis package calls logger.warn
@pytest.mark.parametrize("seed", [0, 1])
def test_lvis_standard_and_fixed_ap_equal_the_lvis_package(tmp_path, seed):
    pytest.importorskip("lvis")
    gt = random_gt(seed, num_images=10, lvis=True)
    dets = random_detections(gt, seed + 20)
    ann = write_json(tmp_path / "lvis.json", gt)
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]

    standard = score_lvis(ann, dets, fixed_ap=False, max_dets=4)
    direct = direct_lvis(ann, dets, max_dets=4).get_results()
    assert [standard.metrics[k] for k in keys] == [float(direct[k]) for k in keys]

    # Fixed AP: per category the top-k over the whole dataset, then no per-image limit
    topk = 3
    fixed = score_lvis(ann, dets, fixed_ap=True, topk=topk)
    selected = []
    for cat in sorted({d["category_id"] for d in dets}):
        ranked = sorted((d for d in dets if d["category_id"] == cat), key=lambda d: -d["score"])
        selected += ranked[:topk]
    evaluator = direct_lvis(ann, selected, max_dets=-1)
    direct_fixed = evaluator.get_results()
    assert [fixed.metrics[k] for k in keys] == pytest.approx(
        [float(direct_fixed[k]) for k in keys], abs=1e-15
    )
    assert fixed.metrics["num_detections"] == len(selected)
    for k, row in enumerate(fixed.per_category):
        assert row["AP"] == pytest.approx(per_category_ap(evaluator.eval["precision"], k), abs=1e-15)
        assert row["frequency"] == {2: "f", 4: "c", 6: "r", 9: "r"}[row["id"]]


def test_lvis_without_detections(tmp_path):
    pytest.importorskip("lvis")
    gt = random_gt(0, num_images=6, lvis=True)
    score = score_lvis(write_json(tmp_path / "lvis.json", gt), [])
    assert score.metrics["AP"] == 0.0 and score.metrics["num_detections"] == 0


def test_fixed_ap_keeps_the_best_per_class_across_images_not_per_image():
    dets = [
        {"image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 0.9},
        {"image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 0.8},
        {"image_id": 2, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 0.7},
        {"image_id": 3, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 0.95},
        {"image_id": 3, "category_id": 8, "bbox": [0, 0, 1, 1], "score": 0.1},
    ]
    kept = fixed_ap_selection(dets, topk=2)
    assert [(d["image_id"], d["category_id"], d["score"]) for d in kept] == [
        (3, 5, 0.95),
        (1, 5, 0.9),
        (3, 8, 0.1),
    ]


# ---------------------------------------------------------------------------------------- predictions


def test_predictions_files_coco_results_and_glip_detect_records(tmp_path):
    gt = {
        "images": [
            {"id": 10, "file_name": "sub/a.jpg", "width": 100, "height": 80},
            {"id": 11, "file_name": "sub/b.jpg", "width": 100, "height": 80},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 1, "bbox": [10, 10, 30, 20], "area": 600, "iscrowd": 0},
            {"id": 2, "image_id": 11, "category_id": 2, "bbox": [50, 40, 20, 20], "area": 400, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "hair_drier"}, {"id": 2, "name": "bow_(weapon)"}],
    }
    ann = write_json(tmp_path / "gt.json", gt)
    dataset = load_coco_dataset(ann)
    ours = [
        {
            "file": "/somewhere/else/sub/a.jpg",
            "width": 100,
            "height": 80,
            "detections": [
                {"box_xyxy": [10, 10, 39, 29], "score": 0.9, "label": 0, "phrase": "hair drier"},
                {"box_xyxy": [0, 0, 5, 5], "score": 0.2, "label": 1, "phrase": "bow_(weapon)"},
            ],
        },
        {
            "file": "b.jpg",
            "width": 200,  # the image was processed at twice the size: boxes are rescaled
            "height": 160,
            "detections": [{"box_xyxy": [100, 80, 138, 118], "score": 0.8, "label": 1, "phrase": "bow"}],
        },
    ]
    results = load_detection_predictions(write_json(tmp_path / "ours.json", ours), dataset, plus_one=True)
    assert results == [
        {"image_id": 10, "category_id": 1, "bbox": [10.0, 10.0, 30.0, 20.0], "score": 0.9},
        {"image_id": 10, "category_id": 2, "bbox": [0.0, 0.0, 6.0, 6.0], "score": 0.2},
        {"image_id": 11, "category_id": 2, "bbox": [50.0, 40.0, 20.0, 20.0], "score": 0.8},
    ]
    lvis_style = load_detection_predictions(tmp_path / "ours.json", dataset, plus_one=False)
    assert lvis_style[0]["bbox"] == [10.0, 10.0, 29.0, 19.0]
    scored = score_detection_file("coco", tmp_path / "ours.json", ann)
    assert scored.metrics["AP"] == pytest.approx(1.0)
    coco_file = write_json(tmp_path / "coco.json", results)
    assert score_detection_file("coco", coco_file, ann).metrics == scored.metrics


def test_metrics_json_of_a_scored_file_matches_pycocotools(tmp_path):
    gt = random_gt(7)
    dets = random_detections(gt, 8)
    ann = write_json(tmp_path / "gt.json", gt)
    res = write_json(tmp_path / "dets.json", dets)
    result = score_detection_file(
        "coco", res, ann, None, EvalOptions(out_dir=tmp_path / "out", num_examples=0)
    )
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    direct = direct_cocoeval(ann, res)
    assert [written["metrics"][k] for k in COCO_METRICS] == [float(v) for v in direct.stats]
    assert written["per_category"][0]["name"] == "thing 2"
    assert (tmp_path / "out" / "summary.md").exists()
    assert result.files["metrics"].endswith("metrics.json")


@pytest.mark.parametrize("fixed_ap", [True, False])
def test_lvis_collector_is_the_same_on_one_or_two_ranks_and_equals_the_offline_selection(fixed_ap):
    from glip.eval.data import records_to_coco_results
    from glip.eval.lvis import LvisCollector

    rng = np.random.default_rng(0)
    image_ids = list(range(1, 31))
    records = []
    for image_id in image_ids:
        n = int(rng.integers(0, 12))
        scores = sorted((float(s) for s in rng.choice([0.2, 0.5, 0.7, 0.9], size=n)), reverse=True)  # ties
        x1 = rng.uniform(0, 50, size=n)
        boxes = [[x, x, x + 10, x + 20] for x in x1.tolist()]
        records.append(
            {
                "id": image_id,
                "boxes": boxes,
                "scores": scores,
                "labels": rng.choice([3, 5, 8], size=n).tolist(),
            }
        )
    options = {"fixed_ap": fixed_ap, "topk": 4, "max_dets": 3}

    one = LvisCollector(image_ids, {1, 2}, **options)
    for record in records:
        one.add(record)
    shards = [LvisCollector(image_ids, {1, 2}, **options) for _ in range(2)]
    for index, record in enumerate(records):
        shards[index % 2].add(record)
    single, examples = one.merge([one.state()])
    double, examples2 = shards[0].merge([s.state() for s in shards])
    assert single == double and set(examples) == set(examples2) == {1, 2}

    everything = records_to_coco_results({r["id"]: r for r in records}, image_ids, plus_one=False)
    if fixed_ap:
        expected = fixed_ap_selection(everything, topk=4)
    else:
        expected = []
        for image_id in image_ids:
            expected += sorted(
                (d for d in everything if d["image_id"] == image_id), key=lambda d: -d["score"]
            )[:3]
    by_cat = lambda dets: {c: [d for d in dets if d["category_id"] == c] for c in (3, 5, 8)}  # noqa: E731
    if fixed_ap:
        assert by_cat(single) == by_cat(expected)
    else:
        key = lambda d: (d["image_id"], d["category_id"], d["score"], d["bbox"][0])  # noqa: E731
        assert sorted(single, key=key) == sorted(expected, key=key)


def test_suite_with_an_official_odinw_task_config(tmp_path):
    from glip.eval import evaluate_odinw, load_suite

    gt = random_gt(4)
    write_json(tmp_path / "DATASET" / "odinw" / "Thing" / "valid" / "annotations_without_background.json", gt)
    (tmp_path / "DATASET" / "odinw" / "Thing" / "valid").mkdir(parents=True, exist_ok=True)
    config = tmp_path / "configs" / "Thing_v1.yaml"
    config.parent.mkdir()
    config.write_text(
        """DATASETS:
  OVERRIDE_CATEGORY: '[{"id": 2, "name": "cat", "supercategory": "x"}, {"id": 4, "name": "dog", "supercategory": "x"}]'
  CAPTION_PROMPT: '[{"prefix": "", "name": "cat", "suffix": ""}]'
  REGISTER:
    minival:
      ann_file: odinw/Thing/valid/annotations_without_background.json
      img_dir: odinw/Thing/valid
    train:
      ann_file: odinw/Thing/train/annotations_without_background.json
      img_dir: odinw/Thing/train
  TEST: ("minival",)
MODEL:
  DYHEAD:
    NUM_CLASSES: 5
"""
    )
    preds = write_json(tmp_path / "preds.json", random_detections(gt, 9))
    suite = write_json(
        tmp_path / "suite.json",
        {
            "root": "DATASET",
            "datasets": [{"glip_config": "configs/Thing_v1.yaml", "predictions": "../preds.json"}],
        },
    )
    datasets, _ = load_suite(suite)
    (entry,) = datasets
    assert entry.name == "Thing_v1" and entry.ann.name == "annotations_without_background.json"
    assert entry.images == tmp_path / "DATASET" / "odinw" / "Thing" / "valid"
    assert entry.caption_prompt == [{"prefix": "", "name": "cat", "suffix": ""}]
    result = evaluate_odinw(None, suite, EvalOptions(out_dir=tmp_path / "out", num_examples=0))
    names = {
        r["id"]: r["name"]
        for r in json.loads((tmp_path / "out" / "Thing_v1" / "metrics.json").read_text())["per_category"]
    }
    assert names[2] == "cat" and names[4] == "dog" and names[6] == "thing 6"  # OVERRIDE_CATEGORY applied
    assert result.metrics["AP_avg"] == score_coco(gt, json.loads(preds.read_text())).metrics["AP"]


def test_report_without_matplotlib(tmp_path, monkeypatch):
    import glip.eval.report as report

    monkeypatch.setattr(report, "_figure", lambda *a: None)
    gt = random_gt(2)
    ann = write_json(tmp_path / "gt.json", gt)
    result = score_detection_file(
        "coco",
        write_json(tmp_path / "d.json", random_detections(gt, 3)),
        ann,
        None,
        EvalOptions(out_dir=tmp_path / "o"),
    )
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["metrics.json", "summary.md"]
    assert (
        set(result.files) == {"metrics", "summary"}
        and "## Plots" not in (tmp_path / "o" / "summary.md").read_text()
    )
