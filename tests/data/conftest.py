"""Helpers for the data tests: tiny images and annotation files written to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glip.data import EvalTransform, TrainTransform
from glip.text.tokenizer import VOCAB_PATH


def write_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A random RGB PNG of ``width`` x ``height``."""
    array = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def coco_dict(num_images: int = 3, width: int = 64, height: int = 48) -> dict:
    """3 categories (ids 1, 5, 9: person, bicycle, traffic_light), two boxes per image."""
    categories = [
        {"id": 1, "name": "person"},
        {"id": 5, "name": "bicycle"},
        {"id": 9, "name": "traffic_light"},
    ]
    images, annotations = [], []
    for i in range(num_images):
        images.append({"id": i + 1, "file_name": f"im{i}.png", "width": width, "height": height})
        annotations.append(
            {"id": 2 * i + 1, "image_id": i + 1, "bbox": [2, 3, 20, 30], "category_id": 1, "iscrowd": 0}
        )
        annotations.append(
            {"id": 2 * i + 2, "image_id": i + 1, "bbox": [30, 10, 25, 20], "category_id": 9, "iscrowd": 0}
        )
    return {"images": images, "annotations": annotations, "categories": categories}


@pytest.fixture
def coco_dir(tmp_path: Path) -> tuple[Path, dict]:
    data = coco_dict()
    for i, image in enumerate(data["images"]):
        write_image(tmp_path / image["file_name"], image["width"], image["height"], seed=i)
    return tmp_path, data


@pytest.fixture
def eval_transform() -> EvalTransform:
    return EvalTransform(min_size=48, max_size=100)


@pytest.fixture
def no_flip() -> TrainTransform:
    return TrainTransform(min_sizes=(48,), max_size=100, flip_prob=0.0)


@pytest.fixture(scope="session")
def vocabulary_1203() -> list[str]:
    """1203 distinct LVIS-like names (some with "_" and "(...)"), made from bert-base-uncased words."""
    words = [
        w
        for w in VOCAB_PATH.read_text(encoding="utf-8").split("\n")[2000:]
        if w.isalpha() and w.isascii() and len(w) >= 4
    ]
    names = []
    for i in range(1203):
        if i % 7 == 0:
            names.append(f"{words[2 * i]}_{words[2 * i + 1]}")
        elif i % 11 == 0:
            names.append(f"{words[2 * i]}_({words[2 * i + 1]})")
        else:
            names.append(words[2 * i])
    assert len(set(names)) == 1203
    return names


class _Helpers:
    write_image = staticmethod(write_image)
    write_json = staticmethod(write_json)
    write_jsonl = staticmethod(write_jsonl)
    coco_dict = staticmethod(coco_dict)


@pytest.fixture
def helpers() -> type[_Helpers]:
    """write_image / write_json / write_jsonl / coco_dict (test modules cannot import conftest)."""
    return _Helpers
