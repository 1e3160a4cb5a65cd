"""A toy grounding dataset (coloured shapes with exact boxes) for tests, demos and quick experiments."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from glip.config import get_preset
from glip.data.types import Sample
from glip.losses.grounding import Target
from glip.preprocess import normalize
from glip.text.prompts import create_positive_map
from glip.text.tokenizer import get_tokenizer

CLASSES = ("red square", "blue circle")
CAPTION = "red square. blue circle"
SPANS = {0: (0, 10), 1: (12, 23)}


def draw_scene(
    seed: int, size: int = 128
) -> tuple[Image.Image, list[tuple[float, float, float, float]], list[int]]:
    """An image with one red square and one blue circle at seeded positions; boxes are exact."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    boxes, labels = [], []
    for label in (0, 1):
        side = int(rng.integers(size // 4, size // 2))
        x = int(rng.integers(0, size - side))
        y = int(rng.integers(0, size - side))
        if label == 0:
            draw.rectangle([x, y, x + side - 1, y + side - 1], fill=(220, 20, 20))
        else:
            draw.ellipse([x, y, x + side - 1, y + side - 1], fill=(20, 20, 220))
        boxes.append((float(x), float(y), float(x + side - 1), float(y + side - 1)))
        labels.append(label)
    return image, boxes, labels


class SquaresDataset(Dataset):
    """Detection as grounding on generated scenes, caption "red square. blue circle" (no augmentation)."""

    def __init__(self, count: int, size: int = 128, seed: int = 0) -> None:
        self.items = [draw_scene(seed + i, size) for i in range(count)]
        input_config = get_preset("tiny").input
        self.mean, self.std = input_config.pixel_mean, input_config.pixel_std
        encoding = get_tokenizer()(CAPTION)
        self.token_rows = create_positive_map(encoding, [[SPANS[0]], [SPANS[1]]], 256, binary=True)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        image, boxes, labels = self.items[index]
        target = Target(
            boxes=torch.tensor(boxes, dtype=torch.float32),
            labels=torch.tensor([label + 1 for label in labels]),
            token_map=self.token_rows[labels].clone(),
        )
        return Sample(
            image=normalize(image, self.mean, self.std), target=target, caption=CAPTION, image_id=str(index)
        )


def deterministic_tiny_random():
    """``tiny_random`` with every dropout off: train-mode forwards are deterministic."""
    config = get_preset("tiny_random")
    bert = {**config.text.bert, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    return dataclasses.replace(
        config,
        text=dataclasses.replace(config.text, bert=bert),
        head=dataclasses.replace(config.head, fusion_dropout=0.0),
        fpn_drop_block=0.0,
    )


def write_toy_coco(out_dir: str | Path, count: int, size: int = 128, seed: int = 0) -> Path:
    """Write ``count`` toy scenes as PNGs plus a COCO detection JSON (``out_dir/annotations.json``)."""
    import json

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image, boxes, labels = draw_scene(seed + index, size)
        name = f"scene_{index:04d}.png"
        image.save(out / "images" / name)
        images.append({"id": index + 1, "file_name": name, "width": size, "height": size})
        for (x1, y1, x2, y2), label in zip(boxes, labels):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": label + 1,
                    "bbox": [x1, y1, x2 - x1 + 1, y2 - y1 + 1],  # legacy: x2 = x + w - 1
                    "area": (x2 - x1 + 1) * (y2 - y1 + 1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)]
    path = out / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path
