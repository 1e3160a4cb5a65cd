"""Datasets: COCO detection, MDETR grounding, ODVG (both record kinds), captions; bad data; collate."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader

from glip.data import (
    CaptionDataset,
    CocoGroundingDataset,
    DataError,
    EvalTransform,
    MDETRDataset,
    ODVGDataset,
    TrainTransform,
    collate,
)


def _coco_to_odvg(data: dict) -> tuple[list[dict], dict]:
    """mmdetection coco2odvg: xyxy = [x, y, x + w, y + h], label = position in categories, label map."""
    label_of = {cat["id"]: i for i, cat in enumerate(data["categories"])}
    lines = []
    for image in data["images"]:
        instances = [
            {
                "bbox": [
                    a["bbox"][0],
                    a["bbox"][1],
                    a["bbox"][0] + a["bbox"][2],
                    a["bbox"][1] + a["bbox"][3],
                ],
                "label": label_of[a["category_id"]],
                "category": data["categories"][label_of[a["category_id"]]]["name"],
            }
            for a in data["annotations"]
            if a["image_id"] == image["id"]
        ]
        lines.append(
            {
                "filename": image["file_name"],
                "height": image["height"],
                "width": image["width"],
                "detection": {"instances": instances},
            }
        )
    return lines, {str(i): cat["name"] for i, cat in enumerate(data["categories"])}


# ------------------------------------------------------------------------------------------ COCO


def test_coco_dataset_basics(coco_dir, eval_transform):
    root, data = coco_dir
    data["annotations"].append(
        {"id": 99, "image_id": 1, "bbox": [1, 1, 40, 40], "category_id": 5, "iscrowd": 1}
    )
    dataset = CocoGroundingDataset(data, root, eval_transform, num_negatives=-1, shuffle_classes=False)
    assert len(dataset) == 3 and dataset.skipped == 0
    sample = dataset[0]
    assert sample.image.shape == (3, 48, 64) and sample.image_id == "1"
    assert sample.caption == "person. bicycle. traffic light"
    assert sample.target.labels.tolist() == [1, 3]  # the crowd bicycle is ignored
    # xywh [2, 3, 20, 30] -> legacy xyxy [2, 3, 21, 32] (image not resized: shorter side is already 48)
    assert sample.target.boxes[0].tolist() == [2.0, 3.0, 21.0, 32.0]
    assert sample.target.token_map.shape == (2, 256)
    assert sample.target.token_map[0].nonzero().reshape(-1).tolist() == [1]
    assert sample.target.token_map[1].nonzero().reshape(-1).tolist() == [5, 6]  # "traffic light"


def test_coco_subsets_and_images_without_boxes(coco_dir, eval_transform):
    root, data = coco_dir
    data["images"].append({"id": 4, "file_name": "im0.png", "width": 64, "height": 48})  # no annotation
    dataset = CocoGroundingDataset(data, root, eval_transform, num_negatives=-1, shuffle_classes=False)
    assert len(dataset) == 3
    keep_empty = CocoGroundingDataset(data, root, eval_transform, remove_images_without_annotations=False)
    assert len(keep_empty) == 4 and keep_empty[3].target.boxes.shape == (0, 4)
    only = CocoGroundingDataset(data, root, eval_transform, image_ids=[2], category_subset=["person", 5])
    assert len(only) == 1 and only.class_names == {1: "person", 2: "bicycle"}
    sample = only[0]
    assert sample.image_id == "2" and sample.target.labels.tolist() == [1]  # traffic lights left out
    assert "traffic" not in sample.caption
    with pytest.raises(DataError, match="unknown categories"):
        CocoGroundingDataset(data, root, eval_transform, category_subset=["zebra"])


def test_coco_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json is not valid JSON"):
        CocoGroundingDataset(bad, tmp_path, None)
    with pytest.raises(DataError, match="not found"):
        CocoGroundingDataset(tmp_path / "missing.json", tmp_path, None)
    with pytest.raises(DataError, match="'categories'"):
        CocoGroundingDataset({"images": [], "annotations": []}, tmp_path, None)
    with pytest.raises(DataError, match="empty after cleaning"):
        CocoGroundingDataset(
            {"images": [], "annotations": [], "categories": [{"id": 1, "name": "(x)"}]}, tmp_path
        )


# ------------------------------------------------------------------------------------- bad records


def _bad_coco(kind: str, data: dict) -> dict:
    data = copy.deepcopy(data)
    ann = data["annotations"][2]  # image 2
    if kind == "negative size":
        ann["bbox"] = [5, 5, -3, 10]
    elif kind == "unknown category":
        ann["category_id"] = 42
    elif kind == "malformed box":
        ann["bbox"] = [5, 5, "10", 10]
    return data


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("negative size", "negative width or height"),
        ("unknown category", "unknown category_id 42"),
        ("malformed box", "not 4 finite numbers"),
    ],
)
def test_bad_coco_annotations(coco_dir, eval_transform, kind, message):
    root, data = coco_dir
    bad = _bad_coco(kind, data)
    dataset = CocoGroundingDataset(bad, root, eval_transform, on_error="skip")
    assert len(dataset) == 2 and dataset.skipped == 1
    assert "image id 2 (im1.png)" in dataset.problems[0] and message in dataset.problems[0]
    with pytest.raises(DataError, match=message):
        CocoGroundingDataset(bad, root, eval_transform, on_error="raise")


@pytest.mark.parametrize("kind", ["missing", "unreadable"])  # a wrong size: test_bad_training_data.py
def test_bad_images_skip_to_next_or_raise(coco_dir, eval_transform, kind):
    root, data = coco_dir
    if kind == "missing":
        (root / "im1.png").unlink()
        message = "image not found"
    else:
        (root / "im1.png").write_bytes(b"not an image at all")
        message = "not an image file"
    dataset = CocoGroundingDataset(data, root, eval_transform, on_error="skip")
    assert [dataset[i].image_id for i in range(3)] == ["1", "3", "3"]  # index 1 -> the next usable sample
    assert dataset.skipped == 1 and message in dataset.problems[0] and "image id 2" in dataset.problems[0]
    loader = DataLoader(dataset, batch_size=3, collate_fn=collate)
    assert next(iter(loader)).image_ids == ["1", "3", "3"]  # never crashes mid-epoch
    strict = CocoGroundingDataset(data, root, eval_transform, on_error="raise")
    strict[0]
    with pytest.raises(DataError, match=message):
        strict[1]


def test_all_records_bad(coco_dir, eval_transform):
    root, data = coco_dir
    for image in data["images"]:
        (root / image["file_name"]).unlink()
    dataset = CocoGroundingDataset(data, root, eval_transform)
    with pytest.raises(DataError, match="no usable sample left"):
        dataset[0]
    assert dataset.skipped == 3


# ------------------------------------------------------------------------------------------ MDETR


def _mdetr(root, helpers, caption="the man on the left of the red car"):
    helpers.write_image(root / "g.png", 80, 60)
    return {
        "images": [{"id": 10, "file_name": "g.png", "width": 80, "height": 60, "caption": caption}],
        "annotations": [
            {"id": i, "image_id": 10, "bbox": box, "tokens_positive": [span], "category_id": 1}
            for i, (box, span) in enumerate([([5, 5, 20, 40], [0, 7]), ([40, 20, 30, 20], [27, 34])], 1)
        ],
    }


def test_mdetr_dataset_and_flip(tmp_path, helpers):
    data = _mdetr(tmp_path, helpers)
    dataset = MDETRDataset(data, tmp_path, EvalTransform(60, 100), on_error="raise")
    sample = dataset[0]
    assert sample.caption == data["images"][0]["caption"]
    assert sample.target.boxes.tolist() == [[5.0, 5.0, 24.0, 44.0], [40.0, 20.0, 69.0, 39.0]]
    assert sample.target.token_map[0].nonzero().reshape(-1).tolist() == [1, 2]  # "the man"
    assert sample.target.token_map[1].nonzero().reshape(-1).tolist() == [8, 9]  # "red car"
    flipped = MDETRDataset(data, tmp_path, TrainTransform((60,), 100, flip_prob=1.0))[0]
    assert flipped.caption == "the man on the right of the red car"
    assert flipped.target.boxes.tolist() == [
        [80 - 24 - 1, 5.0, 80 - 5 - 1, 44.0],
        [80 - 69 - 1, 20.0, 80 - 40 - 1, 39.0],
    ]
    assert torch.equal(flipped.target.token_map, sample.target.token_map)  # same tokens, "right" is 1 token


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("span outside", "lies outside the caption"),
        ("negative size", "negative width or height"),
        ("long caption", "tokens > 256; refused"),
        ("no caption", "caption must be a string"),
    ],
)
def test_bad_mdetr_records(tmp_path, helpers, kind, message):
    data = _mdetr(tmp_path, helpers)
    good = copy.deepcopy(data["images"][0])
    good.update(id=11)
    data["images"].append(good)
    data["annotations"].append({"id": 3, "image_id": 11, "bbox": [1, 1, 9, 9], "tokens_positive": [[0, 3]]})
    if kind == "span outside":
        data["annotations"][0]["tokens_positive"] = [[30, 99]]
    elif kind == "negative size":
        data["annotations"][1]["bbox"] = [1, 1, 5, -5]
    elif kind == "long caption":
        data["images"][0]["caption"] = "word " * 300
    else:
        del data["images"][0]["caption"]
    dataset = MDETRDataset(data, tmp_path, EvalTransform(60, 100))
    assert len(dataset) == 1 and dataset.skipped == 1 and message in dataset.problems[0]
    assert "image id 10" in dataset.problems[0]
    assert dataset[0].image_id == "11"
    with pytest.raises(DataError, match=message):
        MDETRDataset(data, tmp_path, EvalTransform(60, 100), on_error="raise")


def test_mdetr_annotation_without_spans_is_ignored(tmp_path, helpers):
    data = _mdetr(tmp_path, helpers)
    data["annotations"][1]["tokens_positive"] = []
    dataset = MDETRDataset(data, tmp_path, EvalTransform(60, 100), on_error="raise")
    assert dataset.skipped == 0 and dataset[0].target.boxes.shape == (1, 4)


# ------------------------------------------------------------------------------------------- ODVG


def test_odvg_detection_equals_coco(coco_dir, eval_transform, helpers):
    root, data = coco_dir
    lines, label_map = _coco_to_odvg(data)
    jsonl = helpers.write_jsonl(root / "od.jsonl", lines)
    label_file = helpers.write_json(root / "label_map.json", label_map)
    coco = CocoGroundingDataset(data, root, eval_transform, num_negatives=-1, shuffle_classes=False)
    for names in (label_file, None):  # label map file, or names from the instances' "category"
        odvg = ODVGDataset(
            jsonl,
            root,
            eval_transform,
            label_map=names,
            num_negatives=-1,
            shuffle_classes=False,
            on_error="raise",
        )
        assert len(odvg) == len(coco)
        for i in range(len(coco)):
            ours, theirs = odvg[i], coco[i]
            assert torch.equal(ours.target.boxes, theirs.target.boxes)
            assert torch.equal(ours.image, theirs.image)
            if names is None:  # only the classes that occur in some record are known
                assert ours.caption == "person. traffic light" and ours.target.labels.tolist() == [1, 2]
                continue
            assert ours.caption == theirs.caption == "person. bicycle. traffic light"
            assert torch.equal(ours.target.labels, theirs.target.labels)
            assert torch.equal(ours.target.token_map, theirs.target.token_map)


def test_odvg_grounding_records(tmp_path, helpers):
    helpers.write_image(tmp_path / "a.png", 80, 60)
    caption = "two dogs and a ball"
    line = {
        "filename": "a.png",
        "height": 60,
        "width": 80,
        "grounding": {
            "caption": caption,
            "regions": [
                {
                    "bbox": [[1, 1, 21, 31], [30, 2, 50, 40]],
                    "phrase": "two dogs",
                    "tokens_positive": [[0, 8]],
                },
                {"bbox": [60, 40, 70, 50], "phrase": "a ball"},  # no tokens_positive: found in the caption
                {"bbox": [100, 10, 120, 20], "phrase": "a ball", "tokens_positive": [[13, 19]]},  # outside
            ],
        },
    }
    jsonl = helpers.write_jsonl(tmp_path / "vg.jsonl", [line])
    sample = ODVGDataset(jsonl, tmp_path, EvalTransform(60, 100), on_error="raise")[0]
    assert sample.caption == caption
    assert sample.target.labels.tolist() == [1, 1, 2]  # region index + 1; the box outside is dropped
    assert sample.target.boxes.tolist() == [[1, 1, 20, 30], [30, 2, 49, 39], [60, 40, 69, 49]]
    rows = [row.nonzero().reshape(-1).tolist() for row in sample.target.token_map]
    assert rows == [[1, 2], [1, 2], [4, 5]]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("malformed json", "line 2: malformed JSON"),
        ("span outside", "lies outside the caption"),
        ("negative size", "negative size"),
        ("unknown label", "unknown label 7"),
        ("no kind", "needs a 'detection' or a 'grounding'"),
    ],
)
def test_bad_odvg_records(tmp_path, helpers, kind, message):
    helpers.write_image(tmp_path / "a.png", 80, 60)
    good_vg = {
        "filename": "a.png",
        "grounding": {"caption": "a cat", "regions": [{"bbox": [1, 1, 9, 9], "phrase": "a cat"}]},
    }
    good_od = {"filename": "a.png", "detection": {"instances": [{"bbox": [1, 1, 9, 9], "label": 0}]}}
    bad = {
        "filename": "a.png",
        "grounding": {"caption": "a cat", "regions": [{"bbox": [1, 1, 9, 9], "phrase": "x"}]},
    }
    if kind == "malformed json":
        bad = '{"filename": "a.png", '
    elif kind == "span outside":
        bad["grounding"]["regions"][0]["tokens_positive"] = [[2, 9]]
    elif kind == "negative size":
        bad["grounding"]["regions"][0].update(bbox=[9, 1, 1, 9], tokens_positive=[[2, 5]])
    elif kind == "unknown label":
        bad = {"filename": "a.png", "detection": {"instances": [{"bbox": [1, 1, 9, 9], "label": 7}]}}
    else:
        bad = {"filename": "a.png"}
    jsonl = helpers.write_jsonl(tmp_path / "x.jsonl", [good_vg, bad, good_od])
    dataset = ODVGDataset(jsonl, tmp_path, EvalTransform(60, 100), label_map={"0": "cat"})
    assert len(dataset) == 2 and dataset.skipped == 1
    assert "x.jsonl line 2" in dataset.problems[0] and message in dataset.problems[0]
    assert [dataset[i].caption for i in range(2)] == ["a cat", "cat"]
    with pytest.raises(DataError, match=message):
        ODVGDataset(jsonl, tmp_path, EvalTransform(60, 100), label_map={"0": "cat"}, on_error="raise")


# --------------------------------------------------------------------------------------- captions


def test_caption_dataset(tmp_path, helpers):
    helpers.write_image(tmp_path / "imgs" / "a.png", 50, 40)
    absolute = helpers.write_image(tmp_path / "elsewhere" / "b.png", 40, 50)
    lines = [
        {"image": "a.png", "caption": "a cat on a mat"},
        "{broken",
        {"image": str(absolute), "caption": "a dog"},
        {"image": "a.png", "caption": "   "},
        {"image": "a.png", "caption": "word " * 300},
    ]
    jsonl = helpers.write_jsonl(tmp_path / "captions.jsonl", lines)
    dataset = CaptionDataset(jsonl, tmp_path / "imgs", EvalTransform(40, 100))
    assert len(dataset) == 2 and dataset.skipped == 3
    assert any("line 2: malformed JSON" in p for p in dataset.problems)
    assert any("line 4" in p and "empty" in p for p in dataset.problems)
    assert any("line 5" in p and "refused" in p for p in dataset.problems)
    batch = collate([dataset[0], dataset[1]])
    assert batch.images.tensors.shape == (2, 3, 64, 64)
    assert batch.images.image_sizes == [(40, 50), (50, 40)]
    assert all(t.boxes.shape == (0, 4) and t.token_map.shape == (0, 256) for t in batch.targets)
    assert batch.input_ids.shape == batch.attention_mask.shape and batch.input_ids.shape[1] == 7
    assert batch.captions == ["a cat on a mat", "a dog"]
    with pytest.raises(DataError, match="line 2: malformed JSON"):
        CaptionDataset(jsonl, tmp_path / "imgs", None, on_error="raise")


# ---------------------------------------------------------------------------------------- loaders


def test_worker_processes_give_the_same_samples(coco_dir):
    root, data = coco_dir
    dataset = CocoGroundingDataset(
        data, root, TrainTransform((40, 48, 56), 100, 0.5), num_negatives=1, seed=5
    )
    dataset.set_epoch(2)
    direct = collate([dataset[i] for i in range(3)])
    loader = DataLoader(dataset, batch_size=3, collate_fn=collate, num_workers=1)
    batch = next(iter(loader))
    assert batch.captions == direct.captions
    assert torch.equal(batch.images.tensors, direct.images.tensors)
    assert all(torch.equal(a.boxes, b.boxes) for a, b in zip(batch.targets, direct.targets))
