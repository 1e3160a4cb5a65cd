"""Malformed annotation, predictions and suite files give a clear message naming the file and record."""

from __future__ import annotations

import copy

import pytest

from glip.cli import main
from glip.eval import EvalError, load_coco_dataset, load_detection_predictions, load_suite

from .conftest import random_gt, write_json

GOOD = {
    "images": [
        {"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
        {"id": 2, "file_name": "b.jpg", "width": 100, "height": 80},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 30, 20]},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 1},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
}


def edited(change):
    data = copy.deepcopy(GOOD)
    change(data)
    return data


ANNOTATION_CASES = [
    (lambda d: d.pop("categories"), r"missing the 'categories' list"),
    (lambda d: d["annotations"][1].update(image_id=99), r"annotations\[1\] \(id 2\): unknown image_id 99"),
    (
        lambda d: d["annotations"][0].update(category_id=7),
        r"annotations\[0\] \(id 1\): unknown category_id 7",
    ),
    (
        lambda d: d["annotations"][1].update(bbox=[5, 5, -3, 10]),
        r"annotations\[1\] \(id 2\): box .* negative size",
    ),
    (
        lambda d: d["annotations"][0].update(bbox=[1, 2, 3]),
        r"annotations\[0\] \(id 1\): box must be 4 finite numbers",
    ),
    (
        lambda d: d["annotations"][0].pop("category_id"),
        r"annotations\[0\]: missing key\(s\) \['category_id'\]",
    ),
    (lambda d: d["annotations"][1].update(id=1), r"annotations\[1\]: duplicate annotation id 1"),
    (lambda d: d["images"][1].update(id=1), r"images\[1\] \(id 1, 'b.jpg'\): duplicate image id 1"),
    (lambda d: d["images"][0].update(width=-4), r"images\[0\] \(id 1, 'a.jpg'\): 'width' must be a positive"),
    (
        lambda d: d["images"][0].pop("file_name"),
        r"images\[0\] \(id 1\): has neither 'file_name' nor 'coco_url'",
    ),
    (lambda d: d["categories"][1].update(name=None), r"categories\[1\] \(id 2\): 'name' must be a string"),
]


@pytest.mark.parametrize(("change", "message"), ANNOTATION_CASES)
def test_malformed_annotation_files(tmp_path, change, message):
    path = write_json(tmp_path / "gt.json", edited(change))
    with pytest.raises(EvalError, match=message) as info:
        load_coco_dataset(path)
    assert str(path) in str(info.value)


def test_annotation_defaults_and_lvis_fields(tmp_path):
    dataset = load_coco_dataset(GOOD)
    assert dataset.data["annotations"][0]["area"] == 600 and dataset.data["annotations"][0]["iscrowd"] == 0
    assert GOOD["annotations"][0].get("area") is None  # the caller's dict is not modified
    with pytest.raises(EvalError, match=r"categories\[0\] \(id 1, 'cat'\): LVIS needs 'frequency'"):
        load_coco_dataset(GOOD, task="lvis")
    lvis = random_gt(0, lvis=True)
    del lvis["images"][2]["neg_category_ids"]
    with pytest.raises(
        EvalError, match=r"images\[2\] \(id 3, '3.jpg'\): LVIS needs a 'neg_category_ids' list"
    ):
        load_coco_dataset(lvis, task="lvis")
    with pytest.raises(EvalError, match="is this a predictions file"):
        load_coco_dataset(write_json(tmp_path / "list.json", [{"image_id": 1}]))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(EvalError, match=r"broken.json: not a valid JSON file"):
        load_coco_dataset(tmp_path / "broken.json")


PREDICTION_CASES = [
    ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}], r"record 0: missing key\(s\) \['score'\]"),
    (
        [
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5},
            {"image_id": 42, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5},
        ],
        r"record 1 \(image_id 42\): unknown image_id",
    ),
    (
        [{"image_id": 2, "category_id": 9, "bbox": [0, 0, 5, 5], "score": 0.5}],
        r"record 0 \(image_id 2\): unknown category_id 9",
    ),
    (
        [{"image_id": 2, "category_id": 1, "bbox": [0, 0, 5, -1], "score": 0.5}],
        r"record 0 \(image_id 2\): box .* negative size",
    ),
    (
        [{"image_id": 2, "category_id": 1, "bbox": [0, 0, 5, 5], "score": "high"}],
        r"record 0 \(image_id 2\): 'score' must be",
    ),
    ([{"file": "zzz.png", "detections": []}], r"record 0 \(file 'zzz.png'\): matches no image"),
    (
        [
            {
                "file": "a.jpg",
                "detections": [{"box_xyxy": [0, 0, 5, 5], "score": 0.3, "label": 0, "phrase": "horse"}],
            }
        ],
        r"record 0 \(file 'a.jpg'\) detection 0: phrase 'horse' is no category .*'cat', 'dog'",
    ),
    (
        [{"file": "a.jpg", "detections": [{"box_xyxy": [10, 0, 5, 5], "score": 0.3, "phrase": "cat"}]}],
        r"record 0 \(file 'a.jpg'\) detection 0: box \[10, 0, 5, 5\] \(xyxy\) has negative size",
    ),
    ([{"boxes": []}], r"record 0 is neither a COCO result"),
]


@pytest.mark.parametrize(("records", "message"), PREDICTION_CASES)
def test_malformed_predictions_files(tmp_path, records, message):
    dataset = load_coco_dataset(GOOD)
    path = write_json(tmp_path / "preds.json", records)
    with pytest.raises(EvalError, match=message) as info:
        load_detection_predictions(path, dataset, plus_one=True)
    assert str(path) in str(info.value)


def test_an_annotation_file_passed_as_predictions(tmp_path):
    path = write_json(tmp_path / "preds.json", GOOD)
    with pytest.raises(EvalError, match="looks like an annotation file"):
        load_detection_predictions(path, load_coco_dataset(GOOD), plus_one=True)


def test_bad_suite_files(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text("datasets:\n  - ann: a.json\n    prompts: x\n")
    with pytest.raises(EvalError, match=r"suite.yaml: datasets\[0\]: unknown key\(s\) \['prompts'\]"):
        load_suite(suite)
    suite.write_text("datasets: []\n")
    with pytest.raises(EvalError, match="non-empty 'datasets' list"):
        load_suite(suite)


def test_cli_exit_code_2_with_the_record_named(tmp_path, capsys):
    ann = write_json(tmp_path / "gt.json", edited(lambda d: d["annotations"][1].update(bbox=[5, 5, -3, 10])))
    preds = write_json(tmp_path / "preds.json", [])
    code = main(["eval", "--task", "coco", "--predictions", str(preds), "--ann", str(ann)])
    err = capsys.readouterr().err
    assert code == 2
    assert "glip eval: error:" in err and "gt.json: annotations[1] (id 2)" in err and "negative size" in err
    code = main(["eval", "--task", "coco", "--ann", str(ann)])
    assert code == 2 and "give --model" in capsys.readouterr().err
    good = write_json(tmp_path / "good.json", GOOD)
    with_model = ["eval", "--task", "coco", "--model", "random:tiny_random", "--ann", str(good), "--images"]
    code = main([*with_model, str(tmp_path / "nowhere")])
    assert code == 2 and "image folder not found" in capsys.readouterr().err
    code = main([*with_model, str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "good.json: images[0] (id 1, 'a.jpg'): image not found" in err
