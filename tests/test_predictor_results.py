"""Results people can use: ``Prediction.plot()`` / ``.save()`` / ``.to_json()`` / ``.to_coco_results()``
conventions, and label placement (a label never covers another)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import glip
from glip.predictor import GLIPPredictor, Prediction
from glip.visualize import color, draw_prediction, place_labels
from tests.test_predictor import make_image, model, one_thread  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def predictor(model: glip.GLIP) -> GLIPPredictor:
    """``tiny_random`` with ``bias0 = 0`` (so it gives detections), input lowered to 160 px: the ``model`` of
    tests/test_predictor.py."""
    return GLIPPredictor(model)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return make_image(120, 160)


def overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def rects(corners, sizes):
    return [(x, y, x + w, y + h) for (x, y), (w, h) in zip(corners, sizes) if (x, y) is not None]


def test_labels_of_boxes_with_the_same_corner_do_not_cover_each_other():
    boxes = [[40, 50, 140, 150], [40, 50, 120, 130], [41, 50, 100, 90]]
    sizes = [(60, 14)] * 3
    corners = place_labels(boxes, sizes, (300, 200))
    assert corners[0] == (40, 36)  # the best detection's label: just above its box
    assert corners[1] == (40, 50)  # the next: inside the top of its box (above is taken)
    assert None not in corners
    placed = rects(corners, sizes)
    assert not any(overlaps(a, b) for i, a in enumerate(placed) for b in placed[i + 1 :])


def test_crowded_labels_never_overlap_and_stay_inside_the_image():
    rng = np.random.default_rng(0)
    boxes = [[float(x), float(y), float(x) + 30, float(y) + 20] for x, y in rng.integers(0, 100, (60, 2))]
    sizes = [(int(w), 12) for w in rng.integers(20, 70, 60)]
    corners = place_labels(boxes, sizes, (160, 120))
    assert corners.count(None) < len(corners)
    placed = rects(
        [c for c in corners if c is not None], [s for s, c in zip(sizes, corners) if c is not None]
    )
    assert all(0 <= r[0] and 0 <= r[1] and r[2] <= 160 and r[3] <= 120 for r in placed)
    assert not any(overlaps(a, b) for i, a in enumerate(placed) for b in placed[i + 1 :])
    assert place_labels([[0, 0, 10, 10]], [(200, 12)], (160, 120)) == [None]  # wider than the image


def test_drawn_labels_of_two_detections_on_one_box_are_both_visible():
    """Two detections on the same box (two names for one object): both label colours are visible (before,
    the second label was drawn exactly over the first)."""
    canvas = Image.new("RGB", (200, 160), (255, 255, 255))
    prediction = Prediction(
        boxes=torch.tensor([[50.0, 60.0, 150.0, 140.0]] * 2),
        scores=torch.tensor([0.9, 0.8]),
        labels=torch.tensor([0, 1]),
        phrases=["cat", "dog"],
        names=["cat", "dog"],
        image_size=(200, 160),
    )
    drawn = np.asarray(draw_prediction(canvas, prediction))
    # the "dog 0.80" label's fill (its box outline lies under the cat's): ~570 pixels when the whole label
    # shows, ~190 when the cat's label covers all but a sliver of it
    fill = np.all(drawn == np.asarray(color(1)), axis=-1)
    assert fill.sum() > 400, "the second label is hidden under the first"


def test_plot_save_and_json(predictor, image, tmp_path):
    path = tmp_path / "in.png"
    image.save(path)
    result = predictor.predict(path, classes=["cat", "dog"], threshold=0.3)
    assert len(result) > 0 and result.source == str(path)
    plotted = result.plot()
    assert isinstance(plotted, Image.Image) and plotted.size == image.size and plotted.mode == "RGB"
    assert np.array_equal(np.asarray(plotted), np.asarray(draw_prediction(image, result)))
    assert np.array_equal(np.asarray(result.plot(image)), np.asarray(plotted))

    in_memory = predictor.predict(np.asarray(image), classes=["cat", "dog"], threshold=0.3)
    with pytest.raises(ValueError, match="pass it, prediction.plot"):
        in_memory.plot()
    with pytest.raises(ValueError, match="was made on a 160x120 image"):
        in_memory.plot(image.resize((80, 60)))

    saved = result.save(tmp_path / "out.jpg")
    with Image.open(saved) as reread:
        assert reread.format == "JPEG" and reread.size == image.size
    assert result.save(tmp_path / "out.png").exists()
    with pytest.raises(ValueError, match="cannot tell an image format"):
        result.save(tmp_path / "out.unknown")

    text = result.to_json(tmp_path / "result.json")
    assert json.loads(text) == result.to_dict() == json.loads((tmp_path / "result.json").read_text())


def test_coco_results_conventions(predictor, image):
    result = predictor.predict(image, classes=["cat", "dog"], threshold=0.3)
    x1, y1, x2, y2 = result.boxes[0].tolist()
    legacy = result.to_coco_results(image_id=3, category_ids=[5, 6])
    assert legacy == result.to_coco_results(3, [5, 6], legacy_plus_one=True)
    assert legacy[0]["bbox"] == pytest.approx([x1, y1, x2 - x1 + 1, y2 - y1 + 1])  # official GLIP export
    plain = result.to_coco_results(3, [5, 6], legacy_plus_one=False)
    assert plain[0]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])  # pycocotools / LVIS
    assert [r["score"] for r in plain] == [r["score"] for r in legacy]
