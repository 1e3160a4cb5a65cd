"""Painting the synthetic world: backgrounds (plain, noisy, cluttered) and textured objects."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from glip.data.synthetic.geometry import SceneObject
from glip.data.synthetic.vocabulary import BACKGROUNDS, RGB

__all__ = ["object_palette", "paint_background", "paint_object"]


def _shade(colour: str) -> np.ndarray:
    """The darker second colour of striped / dotted textures."""
    return (np.asarray(RGB[colour], dtype=np.float64) * 0.5).astype(np.uint8)


def object_palette(obj: SceneObject) -> list[tuple[int, int, int]]:
    """The RGB values an object's pixels can have (base colour, plus the dark shade when textured)."""
    base = tuple(int(v) for v in RGB[obj.colour])
    return [base] if obj.texture == "solid" else [base, tuple(int(v) for v in _shade(obj.colour))]


def paint_object(pixels: np.ndarray, obj: SceneObject, mask: np.ndarray) -> None:
    """Paint ``obj`` (its colour and texture) into ``pixels`` (H, W, 3) uint8 where ``mask`` (H, W) is set."""
    x1, y1, x2, y2 = obj.box
    inside = mask[y1 : y2 + 1, x1 : x2 + 1]
    region = pixels[y1 : y2 + 1, x1 : x2 + 1]
    base = np.asarray(RGB[obj.colour], dtype=np.uint8)
    if obj.texture == "solid":
        region[inside] = base
        return
    yy, xx = np.mgrid[y1 : y2 + 1, x1 : x2 + 1].astype(np.float64)
    period = obj.tex_period
    if obj.texture == "striped":
        u = xx * math.cos(obj.tex_angle) + yy * math.sin(obj.tex_angle) + obj.tex_phase * period
        dark = np.floor(u / (period / 2)) % 2 == 1
    else:  # dotted: a grid of dots of radius 0.28 period
        gx = np.mod(xx + obj.tex_phase * period, period) - period / 2
        gy = np.mod(yy + obj.tex_phase * period, period) - period / 2
        dark = gx * gx + gy * gy <= (0.28 * period) ** 2
    colours = np.where(dark[..., None], _shade(obj.colour)[None, None, :], base[None, None, :])
    region[inside] = colours[inside]


def paint_background(rng: np.random.Generator, width: int, height: int) -> tuple[str, np.ndarray]:
    """(kind, (height, width, 3) uint8 pixels) of a random background drawn from ``rng``."""
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    grey = int(rng.integers(150, 236))
    base = np.clip(grey + rng.integers(-12, 13, size=3), 0, 255).astype(np.uint8)
    image = Image.new("RGB", (width, height), tuple(int(v) for v in base))
    if (
        kind == "cluttered"
    ):  # faint distractor strokes: lines and arcs a little darker / lighter than the ground
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(10, 30))):
            delta = int(rng.integers(18, 40)) * (1 if rng.random() < 0.5 else -1)
            colour = tuple(int(v) for v in np.clip(base.astype(int) + delta, 0, 255))
            x1, x2 = (float(v) for v in rng.uniform(0, width, size=2))
            y1, y2 = (float(v) for v in rng.uniform(0, height, size=2))
            line_width = int(rng.integers(1, 4))
            if rng.random() < 0.6:
                draw.line([(x1, y1), (x2, y2)], fill=colour, width=line_width)
            else:
                box = [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]
                start = float(rng.uniform(0, 360))
                draw.arc(box, start, start + float(rng.uniform(60, 270)), fill=colour, width=line_width)
    pixels = np.array(image)
    if kind in ("noisy", "cluttered"):
        sigma = 10.0 if kind == "noisy" else 4.0
        noise = rng.standard_normal(size=pixels.shape, dtype=np.float32) * np.float32(sigma)
        pixels = np.clip(pixels.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return kind, pixels
