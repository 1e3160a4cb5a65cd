"""Flickr30K Entities recall on hand-made cases with known answers, both protocols."""

from __future__ import annotations

import pytest

from glip.eval import EvalError, flickr_recall, load_flickr_dataset, load_flickr_predictions, score_flickr
from glip.eval.flickr import box_iou, merge_boxes

from .conftest import write_json

CAPTION = "A man in a red hat throws a ball to two dogs ."
#          0123456789012345678901234567890123456789012345
MAN = [0, 5]  # "A man"
HAT = [9, 18]  # "a red hat"
BALL = [26, 32]  # "a ball"
DOGS = [36, 44]  # "two dogs"


def flickr_file(tmp_path):
    """One sentence, 4 phrases with boxes ("two dogs": 2 separate boxes) and one record without phrases."""
    assert CAPTION[slice(*MAN)] == "A man" and CAPTION[slice(*DOGS)] == "two dogs"
    images = [
        {
            "id": 0,
            "file_name": "100.jpg",
            "height": "200",  # MDETR's files keep the XML strings
            "width": "300",
            "caption": CAPTION,
            "original_img_id": 100,
            "sentence_id": 2,
            "tokens_positive_eval": [[MAN], [HAT], [BALL], [DOGS]],
        },
        {
            "id": 1,
            "file_name": "100.jpg",
            "height": 200,
            "width": 300,
            "caption": "Nothing here .",
            "original_img_id": 100,
            "sentence_id": 3,
            "tokens_positive_eval": [],
        },
    ]
    xywh = lambda x1, y1, x2, y2: [x1, y1, x2 - x1, y2 - y1]  # noqa: E731
    annotations = [
        {"id": 1, "image_id": 0, "category_id": 1, "bbox": xywh(10, 10, 60, 110), "tokens_positive": [MAN]},
        {"id": 2, "image_id": 0, "category_id": 1, "bbox": xywh(20, 0, 50, 20), "tokens_positive": [HAT]},
        {
            "id": 3,
            "image_id": 0,
            "category_id": 1,
            "bbox": xywh(100, 100, 110, 110),
            "tokens_positive": [BALL],
        },
        {
            "id": 4,
            "image_id": 0,
            "category_id": 1,
            "bbox": xywh(150, 100, 200, 150),
            "tokens_positive": [DOGS],
        },
        {
            "id": 5,
            "image_id": 0,
            "category_id": 1,
            "bbox": xywh(250, 100, 300, 150),
            "tokens_positive": [DOGS],
        },
    ]
    return write_json(
        tmp_path / "flickr.json", {"images": images, "annotations": annotations, "categories": []}
    )


def test_iou_and_merge():
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)  # no "+1"
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0
    assert merge_boxes([[150, 100, 200, 150], [250, 100, 300, 150]]) == [[150, 100, 300, 150]]


def test_known_recalls_under_both_protocols(tmp_path):
    dataset = load_flickr_dataset(flickr_file(tmp_path))
    assert dataset.keys == [0]  # the record without phrases is not evaluated
    assert dataset.sentences[0].boxes[3] == [[150.0, 100.0, 200.0, 150.0], [250.0, 100.0, 300.0, 150.0]]
    miss = [0, 0, 1, 1]
    predictions = {
        0: [
            [[10, 10, 60, 110]],  # man: hit at rank 1
            [miss] * 5 + [[20, 0, 50, 20]],  # hat: found at rank 6 -> R@10 and upper bound only
            [],  # ball: nothing predicted -> a miss everywhere
            # dogs: rank 1 = one dog (any-box hit, merged miss: IoU 2500/10000), rank 3 = both (merged hit)
            [[250, 100, 300, 150], miss, [150, 100, 300, 150]],
        ]
    }
    anybox = flickr_recall(dataset, predictions, merged=False)
    merged = flickr_recall(dataset, predictions, merged=True)
    assert anybox == {"R@1": 2 / 4, "R@5": 2 / 4, "R@10": 3 / 4, "upper_bound": 3 / 4, "num_phrases": 4}
    assert merged == {"R@1": 1 / 4, "R@5": 2 / 4, "R@10": 3 / 4, "upper_bound": 3 / 4, "num_phrases": 4}
    both = score_flickr(dataset, predictions)
    assert both["anybox_R@1"] == 0.5 and both["merged_R@1"] == 0.25 and both["num_sentences"] == 1


def test_iou_threshold_is_inclusive_at_one_half(tmp_path):
    dataset = load_flickr_dataset(flickr_file(tmp_path))
    # man GT (10,10,60,110): area 5000; a box covering exactly half of it with no extra -> IoU 0.5
    half = [[10, 10, 60, 60]]
    predictions = {0: [half, [], [], []]}
    assert flickr_recall(dataset, predictions)["R@1"] == 1 / 4


def test_prediction_files_ours_and_official(tmp_path):
    dataset = load_flickr_dataset(flickr_file(tmp_path))
    ours = write_json(tmp_path / "ours.json", [{"image_id": 0, "boxes": [[[10, 10, 60, 110]], [], [], []]}])
    official = write_json(  # MDETR / GLIP dump: original image id + sentence id, a [0, 0, 0, 0] per phrase
        tmp_path / "official.json",
        [
            {
                "image_id": 100,
                "sentence_id": 2,
                "boxes": [[[10, 10, 60, 110], [0, 0, 0, 0]], [[0, 0, 0, 0]]] + [[[0, 0, 0, 0]]] * 2,
            },
            {"image_id": 100, "sentence_id": 3, "boxes": []},
        ],
    )
    a = score_flickr(dataset, load_flickr_predictions(ours, dataset))
    b = score_flickr(dataset, load_flickr_predictions(official, dataset))
    assert a == b and a["anybox_R@1"] == 0.25


def test_bad_flickr_inputs_name_the_record(tmp_path):
    dataset = load_flickr_dataset(flickr_file(tmp_path))
    with pytest.raises(EvalError, match=r"images\[0\].*has 2 phrase list\(s\), the record has 4"):
        flickr_recall(dataset, {0: [[], []]})
    with pytest.raises(EvalError, match=r"no prediction for 1 evaluated record"):
        flickr_recall(dataset, {})
    bad = write_json(tmp_path / "bad.json", [{"image_id": 0, "boxes": [[[10, 10, 5, 110]], [], [], []]}])
    with pytest.raises(EvalError, match=r"bad.json: record 0 \(image_id 0\) boxes\[0\]\[0\].*negative size"):
        load_flickr_predictions(bad, dataset)
    unknown = write_json(tmp_path / "unknown.json", [{"image_id": 7, "boxes": []}])
    with pytest.raises(EvalError, match=r"record 0 \(image_id 7\): unknown image_id"):
        load_flickr_predictions(unknown, dataset)
    data = {
        "images": [{"id": 0, "file_name": "x.jpg", "caption": "a dog", "tokens_positive_eval": [[[0, 5]]]}],
        "annotations": [],
    }
    with pytest.raises(EvalError, match=r"images\[0\] \(id 0, 'x.jpg'\): phrase 0 'a dog' has no box"):
        load_flickr_dataset(write_json(tmp_path / "nobox.json", data))
    data["images"][0]["tokens_positive_eval"] = [[[0, 50]]]
    with pytest.raises(EvalError, match=r"span \[0, 50\] is not inside the caption"):
        load_flickr_dataset(write_json(tmp_path / "span.json", data))
