"""Scoring pseudo-labels against truth: IoU and phrase must both match, one match per true object."""

from __future__ import annotations

import pytest

from glip.selftrain.scoring import score_pseudo_labels

CAPTION = "a red circle and a blue square"  # spans (0, 12) and (17, 30)
TRUTH = {
    "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
    "annotations": [
        {"image_id": 1, "bbox": [10, 10, 20, 20], "tokens_positive": [[0, 12]]},  # legacy xyxy 10,10,29,29
        {"image_id": 1, "bbox": [50, 50, 10, 10], "tokens_positive": [[17, 30]]},
        {"image_id": 2, "bbox": [0, 0, 5, 5], "tokens_positive": [[0, 12]]},  # no pseudo-label at all
    ],
}


def _record(regions):
    return {"filename": "a.png", "grounding": {"caption": CAPTION, "regions": regions}}


def test_matches_need_iou_and_the_phrase():
    exact_circle = {"bbox": [[10, 10, 30, 30]], "tokens_positive": [[0, 12]], "scores": [0.9]}
    square_box_wrong_phrase = {"bbox": [[50, 50, 60, 60]], "tokens_positive": [[0, 12]], "scores": [0.8]}
    score = score_pseudo_labels([_record([exact_circle, square_box_wrong_phrase])], TRUTH)
    assert (score["matched"], score["pseudo_boxes"], score["true_objects"]) == (1, 2, 3)
    assert score["precision"] == pytest.approx(0.5) and score["recall"] == pytest.approx(1 / 3)


def test_each_true_object_matches_once_and_threshold_filters():
    twice = {"bbox": [[10, 10, 30, 30], [11, 10, 30, 30]], "tokens_positive": [[2, 8]], "scores": [0.9, 0.6]}
    far = {"bbox": [[70, 70, 90, 90]], "tokens_positive": [[17, 30]], "scores": [0.95]}
    score = score_pseudo_labels([_record([twice, far])], TRUTH)
    assert (score["matched"], score["pseudo_boxes"]) == (1, 3)  # the duplicate and the far box are wrong
    strict = score_pseudo_labels([_record([twice, far])], TRUTH, threshold=0.7)
    assert (strict["matched"], strict["pseudo_boxes"]) == (1, 2)


def test_unknown_image_is_an_error():
    with pytest.raises(ValueError, match="'c.png'"):
        score_pseudo_labels([{"filename": "c.png", "grounding": {"caption": "x", "regions": []}}], TRUTH)
