"""Generated evaluation data: small images, COCO / LVIS / MDETR-Flickr annotation files, predictions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.helpers import one_thread  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]
#: plots need matplotlib (the ``eval`` extra); without it they are skipped, the rest is written.
PLOTS = importlib.util.find_spec("matplotlib") is not None


def plot_files(*names: str) -> tuple[str, ...]:
    """``names`` when matplotlib is installed, else none."""
    return names if PLOTS else ()


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def draw_image(width: int, height: int, seed: int, shapes: list[tuple[str, list[float]]]) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.fromarray((rng.random((height, width, 3)) * 80 + 120).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for kind, (x, y, w, h) in shapes:
        if kind == "circle":
            draw.ellipse([x, y, x + w, y + h], fill=(220, 30, 30))
        else:
            draw.rectangle([x, y, x + w, y + h], fill=(30, 60, 220))
    return image


def make_coco_set(root: Path, num_images: int = 5, seed: int = 0) -> tuple[Path, Path]:
    """Images 64..160 px with a red circle (category 1) and a blue square (category 3); category 7
    ("traffic_light") has no ground truth; image 3 has no object; image 4's square is a crowd box.

    Returns (annotation file, image folder).
    """
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    categories = [
        {"id": 1, "name": "red circle"},
        {"id": 3, "name": "blue square"},
        {"id": 7, "name": "traffic_light"},
    ]
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in range(1, num_images + 1):
        width, height = int(rng.integers(64, 161)), int(rng.integers(64, 161))
        shapes: list[tuple[str, list[float]]] = []
        if image_id != 3:
            shapes.append(("circle", [width * 0.1, height * 0.2, width * 0.35, height * 0.5]))
            shapes.append(("square", [width * 0.55, height * 0.4, width * 0.35, height * 0.5]))
        draw_image(width, height, seed * 100 + image_id, shapes).save(folder / f"img{image_id}.png")
        images.append({"id": image_id, "file_name": f"img{image_id}.png", "width": width, "height": height})
        for kind, box in shapes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1 if kind == "circle" else 3,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": int(image_id == 4 and kind == "square"),
                }
            )
    ann = write_json(
        root / "ann.json", {"images": images, "annotations": annotations, "categories": categories}
    )
    return ann, folder


def random_gt(seed: int = 0, num_images: int = 12, lvis: bool = False) -> dict[str, Any]:
    """Random COCO (or LVIS) ground truth: 4 categories (id 9 never annotated), small/medium/large boxes,
    crowd boxes (COCO), images without objects."""
    rng = np.random.default_rng(seed)
    frequencies = {2: "f", 4: "c", 6: "r", 9: "r"}
    categories = [{"id": c, "name": f"thing {c}"} for c in (2, 4, 6, 9)]
    if lvis:
        for cat in categories:
            cat["frequency"] = frequencies[cat["id"]]
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        image = {"id": image_id, "file_name": f"{image_id}.jpg", "width": 640, "height": 480}
        present: set[int] = set()
        for _ in range(0 if image_id % 5 == 0 else int(rng.integers(1, 6))):
            side = float(rng.choice([20.0, 60.0, 150.0])) * float(rng.uniform(0.7, 1.3))
            x, y = float(rng.uniform(0, 400)), float(rng.uniform(0, 300))
            cat = int(rng.choice([2, 4, 6]))
            present.add(cat)
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": cat,
                "bbox": [x, y, side, side * float(rng.uniform(0.6, 1.4))],
            }
            ann["area"] = ann["bbox"][2] * ann["bbox"][3]
            if not lvis:
                ann["iscrowd"] = int(rng.random() < 0.12)
            annotations.append(ann)
        if lvis:
            absent = [c for c in (2, 4, 6, 9) if c not in present]
            image["neg_category_ids"] = absent[: len(absent) // 2 + 1] if absent else []
            image["not_exhaustive_category_ids"] = [4] if image_id % 4 == 0 and 4 in present else []
        images.append(image)
    return {"images": images, "annotations": annotations, "categories": categories}


def random_detections(gt: dict[str, Any], seed: int = 1, per_image_noise: int = 6) -> list[dict[str, Any]]:
    """Noisy copies of the GT boxes plus false positives; category 6 is never predicted."""
    rng = np.random.default_rng(seed)
    dets = []
    for ann in gt["annotations"]:
        if ann["category_id"] == 6:
            continue
        for _ in range(int(rng.integers(0, 3))):
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0, 0.1 * max(w, h), size=4)
            box = [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]
            dets.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": ann["category_id"],
                    "bbox": box,
                    "score": float(rng.random()),
                }
            )
    for image in gt["images"]:
        for _ in range(int(rng.integers(0, per_image_noise))):
            box = [
                float(rng.uniform(0, 500)),
                float(rng.uniform(0, 400)),
                float(rng.uniform(5, 200)),
                float(rng.uniform(5, 200)),
            ]
            dets.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.choice([2, 4, 9])),
                    "bbox": box,
                    "score": float(rng.random()),
                }
            )
    return dets


@pytest.fixture(scope="session")
def tiny_random_model():
    """The randomly initialised ``tiny_random`` preset as ``--model random:tiny_random`` builds it."""
    from glip.weights import resolve_model

    return resolve_model("random:tiny_random", None, "cpu")


@pytest.fixture
def coco_set(tmp_path: Path) -> tuple[Path, Path]:
    return make_coco_set(tmp_path / "data")
