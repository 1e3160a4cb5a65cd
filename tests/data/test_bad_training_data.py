"""Malformed or suspicious training data: refused or skipped with the file and record named, corrected and
said once per file with a count, never silent."""

from __future__ import annotations

import copy
import json
import logging

import pytest

from glip.data import CocoGroundingDataset, DataError, MDETRDataset, ODVGDataset
from glip.data.build import build_dataset, detect_format

from .conftest import coco_dict, write_image, write_json, write_jsonl


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_every_box_outside_its_image_is_said_with_counts_and_leaves_nothing_to_train(
    coco_dir, eval_transform, caplog
):
    root, data = coco_dir
    for ann in data["annotations"]:
        ann["bbox"] = [500, 400, 20, 20]  # the images are 64x48
    with caplog.at_level(logging.WARNING, logger="glip"):
        dataset = CocoGroundingDataset(data, root, eval_transform)
    assert len(dataset) == 0  # glip train then refuses: "the training set is empty"
    assert dataset.corrections == {"boxes_outside": 6, "images_without_boxes": 3}
    messages = _warnings(caplog)
    assert len(messages) == 1, messages  # once per file
    assert (
        "6 box(es) entirely outside their image" in messages[0]
        and "3 image(s) left without a box" in messages[0]
    )


def test_boxes_partly_outside_are_clipped_and_counted_once(coco_dir, eval_transform, caplog):
    root, data = coco_dir
    for ann in data["annotations"][::2]:
        ann["bbox"] = [50, 40, 30, 30]  # reaches past 64x48
    with caplog.at_level(logging.WARNING, logger="glip"):
        dataset = CocoGroundingDataset(data, root, eval_transform, on_error="raise")
    assert len(dataset) == 3 and dataset.corrections == {"boxes_clipped": 3}
    messages = _warnings(caplog)
    assert len(messages) == 1 and "3 box(es) partly outside their image (clipped to it)" in messages[0]
    record = dataset.record(0)
    assert record.boxes[0].tolist() == [50.0, 40.0, 63.0, 47.0]


def test_duplicate_image_ids_are_bad_records_not_one_image_with_anothers_boxes(coco_dir, eval_transform):
    root, data = coco_dir
    data["images"][2]["id"] = 2  # im1.png and im2.png both claim id 2
    for ann in data["annotations"]:
        if ann["image_id"] == 3:
            ann["image_id"] = 2
    dataset = CocoGroundingDataset(data, root, eval_transform)
    assert [e.image_id for e in dataset.entries] == ["1"]
    assert (
        dataset.skipped == 1
        and "image id 2 appears more than once (im1.png and im2.png)" in dataset.problems[0]
    )
    with pytest.raises(DataError, match="appears more than once"):
        CocoGroundingDataset(data, root, eval_transform, on_error="raise")


def test_duplicate_annotation_ids_exact_repeats_dropped_and_counted(coco_dir, eval_transform, caplog):
    root, data = coco_dir
    data["annotations"].append(copy.deepcopy(data["annotations"][0]))  # an exact repeat
    other = copy.deepcopy(data["annotations"][1])
    other["bbox"] = [5, 5, 10, 10]
    data["annotations"].append(other)  # a different box with a used id
    with caplog.at_level(logging.WARNING, logger="glip"):
        dataset = CocoGroundingDataset(data, root, eval_transform, on_error="raise")
    assert dataset.corrections == {"duplicate_annotations": 2}
    assert len(dataset.entries[0].boxes) == 3  # 2 + the different one
    assert len(_warnings(caplog)) == 1 and "2 annotation(s) repeating" in _warnings(caplog)[0]


def test_declared_size_differs_from_the_file_trained_on_the_files_size(coco_dir, eval_transform, caplog):
    root, data = coco_dir
    for image in data["images"]:
        image["width"] = 65  # the files are 64 wide
    with caplog.at_level(logging.WARNING, logger="glip"):
        dataset = CocoGroundingDataset(data, root, eval_transform, on_error="raise")
        samples = [dataset[i] for i in range(3)] + [dataset[0]]
    assert [s.image_id for s in samples] == ["1", "2", "3", "1"] and dataset.skipped == 0
    assert dataset.corrections == {"size_mismatch": 3}
    messages = _warnings(caplog)
    assert len(messages) == 1 and "64x48 but the annotation says 65x48" in messages[0]
    with caplog.at_level(logging.INFO, logger="glip"):
        dataset.set_epoch(1)
    assert "3 image(s) not the size their annotation declares" in caplog.records[-1].getMessage()


def test_mdetr_file_whose_first_image_has_no_caption_is_still_mdetr(tmp_path):
    write_image(tmp_path / "a.png", 64, 48)
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
            {"id": 2, "file_name": "a.png", "width": 64, "height": 48, "caption": "a red ball"},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [1, 1, 20, 20], "tokens_positive": [[0, 3]], "category_id": 1},
            {"id": 2, "image_id": 2, "bbox": [1, 1, 20, 20], "tokens_positive": [[2, 10]], "category_id": 1},
        ],
    }
    path = write_json(tmp_path / "goldg.json", data)
    assert detect_format(path) == "mdetr"
    dataset = build_dataset(path, tmp_path, None)
    assert isinstance(dataset, MDETRDataset) and len(dataset) == 1
    assert dataset.skipped == 1 and "image id 1" in dataset.problems[0] and "caption" in dataset.problems[0]


def test_invalid_utf8_in_a_coco_json_names_file_and_line(tmp_path):
    text = json.dumps(coco_dict(), indent=1).replace('"person"', '"pers\udcffon"', 1)
    path = tmp_path / "bad.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "pers" in row)
    with pytest.raises(DataError, match=rf"bad.json line {line} column \d+: not valid UTF-8 \(byte 0xff\)"):
        detect_format(path)
    with pytest.raises(DataError, match=rf"bad.json line {line}"):
        CocoGroundingDataset(path, tmp_path)


def _odvg_lines(tmp_path) -> list:
    write_image(tmp_path / "a.png", 64, 48)
    good = {
        "filename": "a.png",
        "width": 64,
        "height": 48,
        "grounding": {"caption": "a red ball", "regions": [{"bbox": [1, 1, 20, 20], "phrase": "red ball"}]},
    }
    return [good, good]


def test_one_odvg_line_of_invalid_utf8_is_named_and_skipped(tmp_path, caplog):
    lines = _odvg_lines(tmp_path)
    path = tmp_path / "train.jsonl"
    path.write_bytes(
        json.dumps(lines[0]).encode()
        + b"\n"
        + b'{"filename": "a\xff.png"}\n'
        + json.dumps(lines[1]).encode()
        + b"\n"
    )
    assert detect_format(path) == "odvg"
    with caplog.at_level(logging.WARNING, logger="glip"):
        dataset = build_dataset(path, tmp_path, None)
    assert len(dataset) == 2 and dataset.skipped == 1
    assert "train.jsonl line 2: not valid UTF-8 (byte 0xff" in dataset.problems[0]
    with pytest.raises(DataError, match="line 2: not valid UTF-8"):
        build_dataset(path, tmp_path, None, on_error="raise")


@pytest.mark.parametrize("first", ["null", "42", '"text"', "[1, 2]", "{not json"])
def test_odvg_file_whose_first_line_is_not_an_object(tmp_path, first):
    lines = _odvg_lines(tmp_path)
    path = write_jsonl(tmp_path / "train.jsonl", [first, *lines])
    assert detect_format(path) == "odvg"  # decided by the first object line
    dataset = build_dataset(path, tmp_path, None)
    assert len(dataset) == 2 and dataset.skipped == 1 and "train.jsonl line 1" in dataset.problems[0]
    only = write_jsonl(tmp_path / "only.jsonl", [first, "7"])
    with pytest.raises(DataError, match="only.jsonl has no JSON object line"):
        detect_format(only)


def test_odvg_boxes_outside_are_counted_once(tmp_path, caplog):
    lines = _odvg_lines(tmp_path)
    lines[1] = copy.deepcopy(lines[1])
    lines[1]["grounding"]["regions"][0]["bbox"] = [100, 100, 120, 120]
    path = write_jsonl(tmp_path / "train.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="glip"):
        dataset = ODVGDataset(path, tmp_path, on_error="raise")
    assert len(dataset) == 2 and dataset.corrections == {
        "boxes_outside": 1
    }  # a record without boxes: a negative
    assert len(_warnings(caplog)) == 1
