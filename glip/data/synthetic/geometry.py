"""Object geometry of the synthetic world: :class:`SceneObject` and the silhouette masks of its shapes."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SceneObject", "dilate", "object_mask"]


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One drawn object: its concepts, the geometry :func:`object_mask` renders, and its exact box."""

    shape: str
    colour: str
    size: str
    texture: str
    role: str  # "target" (annotated in the split's detection file when its concepts are) or "distractor"
    cx: float
    cy: float
    radius: float  # of the circle the shape is inscribed in
    angle: float  # rotation (radians)
    tex_angle: float
    tex_period: float
    tex_phase: float
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # x1, y1, x2, y2: inclusive bounds of its own mask
    area: int = 0  # pixels of the object's own mask
    visible: float = 1.0  # fraction of those pixels not covered by objects drawn later


def _rotate(points: Sequence[tuple[float, float]], angle: float, cx: float, cy: float) -> list[tuple]:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _regular(n: int, r: float, start: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [
        (r * math.cos(start + 2 * math.pi * k / n), r * math.sin(start + 2 * math.pi * k / n))
        for k in range(n)
    ]


def _outline(shape: str, r: float) -> list[tuple[float, float]]:
    """Polygon (local coordinates, unrotated) of a polygonal shape inscribed in a circle of radius ``r``."""
    if shape == "square":
        h = 0.68 * r
        return [(-h, -h), (h, -h), (h, h), (-h, h)]
    if shape == "triangle":
        return _regular(3, r)
    if shape == "pentagon":
        return _regular(5, 0.95 * r)
    if shape == "star":
        outer, inner = _regular(5, r), _regular(5, 0.45 * r, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        a, b = 0.9 * r, 0.3 * r
        return [
            (-b, -a),
            (b, -a),
            (b, -b),
            (a, -b),
            (a, b),
            (b, b),
            (b, a),
            (-b, a),
            (-b, b),
            (-a, b),
            (-a, -b),
            (-b, -b),
        ]
    if shape == "diamond":
        return [(0, -0.95 * r), (0.55 * r, 0), (0, 0.95 * r), (-0.55 * r, 0)]
    if shape == "arrow":
        length, shaft, head, head_len = 0.9 * r, 0.2 * r, 0.5 * r, 0.6 * r
        x = length - head_len
        return [
            (-length, -shaft),
            (x, -shaft),
            (x, -head),
            (length, 0),
            (x, head),
            (x, shaft),
            (-length, shaft),
        ]
    if shape == "heart":
        points = []
        for k in range(48):
            t = 2 * math.pi * k / 48
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            points.append((x * r / 17.0, (y + 2.5) * r / 17.0))
        return points
    raise ValueError(f"unknown shape {shape!r}")


def object_mask(obj: SceneObject, width: int, height: int) -> np.ndarray:
    """The (height, width) bool mask of the pixels ``obj`` paints (its full silhouette, occlusion ignored)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = obj.cx, obj.cy, obj.radius
    if obj.shape in ("circle", "ring", "crescent"):
        outer = 0.88 * r
        draw.ellipse([cx - outer, cy - outer, cx + outer, cy + outer], fill=255)
        if obj.shape == "ring":
            inner = 0.55 * outer
            draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
        elif obj.shape == "crescent":
            ox, oy = cx + 0.5 * outer * math.cos(obj.angle), cy + 0.5 * outer * math.sin(obj.angle)
            draw.ellipse([ox - outer, oy - outer, ox + outer, oy + outer], fill=0)
    else:
        draw.polygon(_rotate(_outline(obj.shape, r), obj.angle, cx, cy), fill=255)
    return np.asarray(canvas) > 0


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` pixels (4-neighbourhood steps)."""
    out = mask.copy()
    for _ in range(radius):
        grown = out.copy()
        grown[1:, :] |= out[:-1, :]
        grown[:-1, :] |= out[1:, :]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out
