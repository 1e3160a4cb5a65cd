"""Scoring pseudo-labels against known truth (e.g. ``captions_gt.json`` of ``glip synth``).

    glip score-pseudo pseudo/train.jsonl synth/train/captions_gt.json --thresholds 0.6,0.7

A pseudo box is correct when it matches a true object of its image with IoU >= ``iou`` *and* its region's
phrase spans overlap the object's phrase span (``tokens_positive``) in the caption; every true object is
matched at most once (pseudo boxes are taken by decreasing score, each to the unmatched true object of its
phrase with the highest IoU). Precision = correct / pseudo boxes; recall = matched objects / true objects
(objects of images without any pseudo-label count as missed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torchvision.ops import box_iou

__all__ = ["score_pseudo_labels"]


def _load_records(pseudo: str | Path | Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(pseudo, str | Path):
        with Path(pseudo).open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    return list(pseudo)


def _overlaps(spans: Iterable[Iterable[int]], others: Iterable[Iterable[int]]) -> bool:
    others = [tuple(o) for o in others]
    return any(b < oe and ob < e for b, e in (tuple(s) for s in spans) for ob, oe in others)


def score_pseudo_labels(
    pseudo: str | Path | Iterable[Mapping[str, Any]],
    truth: str | Path | Mapping[str, Any],
    iou: float = 0.5,
    threshold: float = 0.0,
) -> dict[str, Any]:
    """Precision / recall of ODVG pseudo-label records against a COCO truth whose annotations carry
    ``tokens_positive`` spans into the image's caption (``captions_gt.json``).

    Only pseudo boxes scoring above ``threshold`` count (to score stricter thresholds of one run).
    Returns ``{"precision", "recall", "pseudo_boxes", "true_objects", "matched", "images"}``.
    """
    data = json.loads(Path(truth).read_text(encoding="utf-8")) if isinstance(truth, str | Path) else truth
    objects: dict[str, list[tuple[list[float], list[list[int]]]]] = {}
    file_of = {image["id"]: image["file_name"] for image in data["images"]}
    for name in file_of.values():
        objects[name] = []
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        objects[file_of[ann["image_id"]]].append(([x, y, x + w - 1, y + h - 1], ann["tokens_positive"]))
    total = sum(len(v) for v in objects.values())
    predicted = matched = 0
    for record in _load_records(pseudo):
        truth_objects = objects.get(record["filename"])
        if truth_objects is None:
            raise ValueError(f"pseudo-label for {record['filename']!r}, which the truth does not have")
        boxes = []  # (score, legacy box, spans)
        for region in record["grounding"]["regions"]:
            for box, score in zip(region["bbox"], region.get("scores", [1.0] * len(region["bbox"]))):
                if score > threshold:
                    x1, y1, x2, y2 = box
                    boxes.append(
                        (score, [x1, y1, x2 - 1, y2 - 1], region["tokens_positive"])
                    )  # ODVG -> legacy
        boxes.sort(key=lambda item: -item[0])
        predicted += len(boxes)
        if not boxes or not truth_objects:
            continue
        ious = box_iou(torch.tensor([b for _, b, _ in boxes]), torch.tensor([t for t, _ in truth_objects]))
        taken = [False] * len(truth_objects)
        for row, (_, _, spans) in enumerate(boxes):
            best, best_iou = -1, iou
            for k, (_, true_spans) in enumerate(truth_objects):
                value = float(ious[row, k])
                if not taken[k] and value >= best_iou and _overlaps(spans, true_spans):
                    best, best_iou = k, value
            if best >= 0:
                taken[best] = True
                matched += 1
    return {
        "precision": matched / predicted if predicted else 0.0,
        "recall": matched / total if total else 0.0,
        "pseudo_boxes": predicted,
        "true_objects": total,
        "matched": matched,
        "images": len(objects),
    }
