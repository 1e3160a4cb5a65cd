"""Drawing predictions: boxes in distinct colours with readable "phrase score" labels."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont


def color(index: int) -> tuple[int, int, int]:
    """A distinct, saturated colour per label index (golden-ratio hue steps)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _blend_masks(canvas: Image.Image, prediction: Any, max_boxes: int, alpha: float) -> Image.Image:
    """``canvas`` with each instance mask (``prediction.masks`` (N, H, W) bool) tinted in its label colour."""
    import numpy as np

    pixels = np.asarray(canvas, dtype=np.float32).copy()
    masks = prediction.masks[:max_boxes].cpu().numpy().astype(bool)
    labels = prediction.labels.tolist()[:max_boxes]
    for mask, label in list(zip(masks, labels))[::-1]:  # best drawn last, on top
        if mask.shape != pixels.shape[:2]:
            raise ValueError(f"mask of shape {mask.shape} does not fit the image ({pixels.shape[:2]})")
        pixels[mask] = (1 - alpha) * pixels[mask] + alpha * np.asarray(color(int(label)), dtype=np.float32)
    return Image.fromarray(pixels.round().clip(0, 255).astype(np.uint8), "RGB")


def place_labels(
    boxes: Sequence[Sequence[float]], sizes: Sequence[tuple[int, int]], canvas: tuple[int, int]
) -> list[tuple[int, int] | None]:
    """Top-left corners for label rectangles that never overlap one another.

    Args:
        boxes: N boxes xyxy, in priority order (the first gets the best place).
        sizes: N label sizes (width, height) in pixels.
        canvas: (width, height) of the image.

    Returns:
        N corners ``(x, y)``: each label goes above its box's top-left corner, or inside it, or below it,
        or, when those places are taken, at the nearest free place next to a label already placed; None
        when no free place inside the image is left (that label is not drawn; its box is).
    """
    import numpy as np

    width, height = canvas
    placed = np.zeros((0, 4), dtype=np.int64)  # x1, y1, x2, y2 (exclusive) of placed labels
    corners: list[tuple[int, int] | None] = []
    for box, (w, h) in zip(boxes, sizes):
        if w > width or h > height:
            corners.append(None)
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        x0 = min(max(x1, 0), width - w)
        base_ys = [y1 - h, y1, y2, y2 - h]
        xs = np.array([x0, *placed[:, 2], *(placed[:, 0] - w)], dtype=np.int64)
        ys = np.array([*base_ys, *placed[:, 3], *(placed[:, 1] - h)], dtype=np.int64)
        xs = np.unique(np.clip(xs, 0, width - w))
        ys = np.unique(np.clip(ys, 0, height - h))
        cx, cy = (a.reshape(-1) for a in np.meshgrid(xs, ys))
        if len(placed):
            overlap = (
                (cx[:, None] < placed[None, :, 2])
                & (cx[:, None] + w > placed[None, :, 0])
                & (cy[:, None] < placed[None, :, 3])
                & (cy[:, None] + h > placed[None, :, 1])
            ).any(axis=1)
            cx, cy = cx[~overlap], cy[~overlap]
        if not len(cx):
            corners.append(None)
            continue
        # the preferred places first (above, inside, below the box), then the nearest to "above"
        rank = np.full(len(cx), len(base_ys), dtype=np.int64)
        for order, y in reversed(list(enumerate(base_ys))):
            rank[(cx == x0) & (cy == min(max(y, 0), height - h))] = order
        distance = np.abs(cx - x0) + np.abs(cy - max(y1 - h, 0))
        best = int(np.lexsort((distance, rank))[0])
        corner = (int(cx[best]), int(cy[best]))
        corners.append(corner)
        placed = np.vstack([placed, [corner[0], corner[1], corner[0] + w, corner[1] + h]])
    return corners


def draw_prediction(
    image: Image.Image, prediction: Any, max_boxes: int = 100, mask_alpha: float = 0.5
) -> Image.Image:
    """Return a copy of ``image`` with ``prediction`` (a :class:`glip.predictor.Prediction`) drawn on it.

    Instance masks (``prediction.masks``, GLIPv2 segmentation) are tinted in their box's colour with opacity
    ``mask_alpha`` under the boxes and labels. Boxes are drawn best last (on top); the "phrase score" labels
    come after all boxes, placed by :func:`place_labels` so that no label covers another (the best
    detections get the places next to their boxes)."""
    canvas = image.convert("RGB").copy()
    if getattr(prediction, "masks", None) is not None and len(prediction.masks):
        canvas = _blend_masks(canvas, prediction, max_boxes, mask_alpha)
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(min(canvas.size) / 250))
    font = _font(max(12, round(min(canvas.size) / 40)))
    items = list(
        zip(
            prediction.boxes.tolist(),
            prediction.scores.tolist(),
            prediction.labels.tolist(),
            prediction.phrases,
        )
    )[:max_boxes]
    for box, _score, label, _phrase in items[::-1]:  # best drawn last, on top
        draw.rectangle(box, outline=color(int(label)), width=line)
    texts, sizes, offsets = [], [], []
    for _box, score, _label, phrase in items:
        text = f"{phrase} {score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        texts.append(text)
        sizes.append((right - left + 4, bottom - top + 4))
        offsets.append((left, top))
    corners = place_labels([box for box, *_ in items], sizes, canvas.size)
    for (_box, _score, label, _phrase), text, (w, h), (left, top), corner in zip(
        items, texts, sizes, offsets, corners
    ):
        if corner is None:
            continue
        rgb = color(int(label))
        x, y = corner
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=rgb)
        luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        draw.text(
            (x + 2 - left, y + 2 - top),
            text,
            fill=(0, 0, 0) if luminance > 140 else (255, 255, 255),
            font=font,
        )
    return canvas


def _banner(canvas: Image.Image, text: str) -> Image.Image:
    """``canvas`` with a white strip on top holding ``text`` (wrapped to the image width)."""
    font = _font(max(12, round(min(canvas.size) / 30)))
    probe = ImageDraw.Draw(canvas)
    lines, current = [], ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if current and probe.textlength(trial, font=font) > canvas.width - 8:
            lines.append(current)
            current = word
        else:
            current = trial
    lines.append(current)
    height = sum(probe.textbbox((0, 0), line or " ", font=font)[3] + 4 for line in lines) + 6
    out = Image.new("RGB", (canvas.width, canvas.height + height), (255, 255, 255))
    out.paste(canvas, (0, height))
    draw, y = ImageDraw.Draw(out), 3
    for line in lines:
        draw.text((4, y), line, fill=(0, 0, 0), font=font)
        y += draw.textbbox((0, 0), line or " ", font=font)[3] + 4
    return out


def draw_answer(image: Image.Image, answer: Any, max_boxes: int = 20) -> Image.Image:
    """``image`` with a GLIPv2 :class:`glip.predictor.Answer` drawn: the question's entity boxes and, above
    the image, "question -> answer (score)"."""
    canvas = draw_prediction(image, answer.entities, max_boxes=max_boxes)
    return _banner(canvas, f"Q: {answer.question}  A: {answer.answer} ({answer.score:.2f})")


def draw_caption(image: Image.Image, caption: Any, min_score: float = 0.0) -> Image.Image:
    """``image`` with a GLIPv2 :class:`glip.predictor.Caption` drawn: the box of every grounded word (scoring
    at least ``min_score``) labelled with the word, and the caption above the image."""
    from types import SimpleNamespace

    import torch

    words = [w for w in caption.grounded(min_score) if w.word.isalpha()]
    boxes = SimpleNamespace(
        boxes=torch.tensor([w.box for w in words], dtype=torch.float32).reshape(-1, 4),
        scores=torch.tensor([w.score for w in words], dtype=torch.float32),
        labels=torch.arange(len(words)),
        phrases=[w.word for w in words],
        masks=None,
    )
    return _banner(draw_prediction(image, boxes), caption.text)
