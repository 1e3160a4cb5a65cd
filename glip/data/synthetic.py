"""A deterministic synthetic grounding world: coloured, textured shapes with exact boxes and captions.

``glip synth --out DIR --num-images N --seed S --split SPLIT`` (or :func:`generate`) draws N images of
1-5 objects (shapes x colours x sizes x textures, overlaps allowed, backgrounds of varying clutter) and
writes them in the three kinds of data GLIP trains on:

* detection: ``detection.json`` (COCO, categories such as "red circle") and ``detection.odvg.jsonl`` +
  ``label_map.json`` (the same boxes as ODVG detection records);
* grounding: ``grounding.json`` (MDETR / Flickr style: a caption per image, ``tokens_positive`` per box) and
  ``grounding.odvg.jsonl`` (ODVG grounding records), captions such as
  "the small red circle left of a blue square and two striped green stars";
* caption-only: ``captions.jsonl`` (image + caption, no boxes) with the hidden ground truth
  ``captions_gt.json`` (COCO, every object, with its span in that caption) to measure pseudo-labels.

``vocab.json`` describes the vocabulary splits (seen concepts, concepts only in grounding captions, held-out
synonyms, held-out class sets) and ``README.txt`` the directory. Everything is a pure function of
``(seed, split, image index, size, random_aspect)``: the same arguments give byte-identical files, and the
first N images of a larger run are the same images. See ``docs/synthetic.md``.

Boxes are the tight bounding box of the object's *own* mask (amodal: a partly occluded object keeps its full
box), as inclusive pixel coordinates ``x1, y1, x2, y2``, written COCO ``[x1, y1, x2 - x1 + 1, y2 - y1 + 1]``
(legacy ``x2 = x + w - 1``) and ODVG ``[x1, y1, x2 + 1, y2 + 1]``: every loader reads back
``x1, y1, x2, y2``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "BACKGROUNDS",
    "HELD_OUT_WORDS",
    "NEW_COLOURS",
    "NEW_SHAPES",
    "RARE_COLOURS",
    "RARE_SHAPES",
    "RELATIONS",
    "RGB",
    "SEEN_COLOURS",
    "SEEN_SHAPES",
    "SIZES",
    "SPLITS",
    "SYNONYMS",
    "TEXTURES",
    "Scene",
    "SceneObject",
    "add_synth_parser",
    "build_caption",
    "detection_categories",
    "generate",
    "make_scene",
    "object_mask",
    "relation_holds",
    "visible_masks",
    "run_synth",
    "vocabulary",
]

# ------------------------------------------------------------------------------------------- vocabulary

#: Colours and shapes of the detection vocabulary (train ``detection.json`` categories: colour x shape).
SEEN_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple")
SEEN_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
#: In training images and grounding captions, never in training detection categories.
RARE_COLOURS: tuple[str, ...] = ("orange",)
RARE_SHAPES: tuple[str, ...] = ("diamond",)
#: Held-out class sets (never in the train / test / synonyms splits): task_A new shapes, task_B new colours.
NEW_SHAPES: tuple[str, ...] = ("pentagon", "heart", "crescent", "arrow")
NEW_COLOURS: tuple[str, ...] = ("pink", "brown", "turquoise")
SIZES: tuple[str, ...] = ("small", "large")
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted")
BACKGROUNDS: tuple[str, ...] = ("plain", "noisy", "cluttered")
#: Held-out name -> the seen word it replaces in the ``synonyms`` split (never written by the other splits).
SYNONYMS: dict[str, str] = {
    "crimson": "red",
    "emerald": "green",
    "azure": "blue",
    "golden": "yellow",
    "violet": "purple",
    "tiny": "small",
    "big": "large",
    "spotted": "dotted",
}
#: Words that never occur in the data files of the train and test splits.
HELD_OUT_WORDS: tuple[str, ...] = tuple(SYNONYMS) + NEW_COLOURS + NEW_SHAPES
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below", "in front of", "behind")
SPLITS: tuple[str, ...] = ("train", "test", "synonyms", "task_A", "task_B")

RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "green": (35, 160, 60),
    "blue": (35, 70, 225),
    "yellow": (245, 205, 25),
    "purple": (140, 55, 185),
    "orange": (250, 135, 20),
    "pink": (250, 120, 190),
    "brown": (130, 75, 30),
    "turquoise": (40, 215, 200),
}
#: How a texture is named in captions ("plain" for solid).
TEXTURE_WORDS: dict[str, str] = {"solid": "plain", "striped": "striped", "dotted": "dotted"}
PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "cross": "crosses",
    "ring": "rings",
    "diamond": "diamonds",
    "pentagon": "pentagons",
    "heart": "hearts",
    "crescent": "crescents",
    "arrow": "arrows",
}
NUMBERS: dict[int, str] = {2: "two", 3: "three", 4: "four", 5: "five"}
#: Surface forms of the relations.
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above",),
    "below": ("below", "under"),
    "in front of": ("in front of",),
    "behind": ("behind",),
}
#: Extent (diameter of the circle a shape is inscribed in) as a fraction of the shorter image side.
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.10, 0.17), "large": (0.26, 0.38)}
MAX_OBJECTS = 5
MIN_VISIBLE = 0.5  # every object keeps at least half of its pixels visible
REPEAT = 0.25  # probability that an object repeats the colour and shape of an earlier one
_SCENE_STREAM = {"train": 0, "test": 1, "synonyms": 1, "task_A": 2, "task_B": 3}  # synonyms = test's images
INFO = {"description": "glip synthetic grounding world", "version": "1"}
_IMAGE_NAME = re.compile(r"^(train|test|synonyms|task_A|task_B)_\d{6}\.png$")
_FILES = (
    "detection.json",
    "detection_all.json",
    "detection_seen_names.json",
    "detection.odvg.jsonl",
    "label_map.json",
    "grounding.json",
    "grounding.odvg.jsonl",
    "captions.jsonl",
    "captions_gt.json",
    "vocab.json",
    "README.txt",
)


def _words(split: str) -> dict[str, str]:
    """Seen word -> the word written in this split (the held-out synonyms in ``synonyms``)."""
    return {seen: held for held, seen in SYNONYMS.items()} if split == "synonyms" else {}


def _name(colour: str, shape: str, words: dict[str, str] | None = None) -> str:
    words = words or {}
    return f"{words.get(colour, colour)} {shape}"


def _concept(colour: str, shape: str, renamed: bool) -> str:
    if colour in NEW_COLOURS:
        return "task_B"
    if shape in NEW_SHAPES:
        return "task_A"
    if colour in RARE_COLOURS or shape in RARE_SHAPES:
        return "rare"
    return "synonym" if renamed else "seen"


def detection_categories(split: str, variant: str = "main") -> list[tuple[str, str, str | None, str]]:
    """The categories of a split's detection file: ``(name, concept, colour, shape)`` in id order.

    ``colour`` is None for shape-only categories (task_A). ``variant``: ``main`` (``detection.json``),
    ``all`` (seen + rare concepts: ``detection_all.json`` of train, the test categories), ``seen_names``
    (synonyms split under the training names: ``detection_seen_names.json``), ``gt`` (every colour x shape
    the split can draw: ``captions_gt.json``). ``concept`` is seen, rare, synonym, task_A or task_B.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    if variant not in ("main", "all", "seen_names", "gt"):
        raise ValueError(f"unknown variant {variant!r}")
    words = {} if variant == "seen_names" else _words(split)
    everything = (SEEN_COLOURS + RARE_COLOURS, SEEN_SHAPES + RARE_SHAPES)
    if split == "task_A":
        if variant != "gt":
            return [(shape, "task_A", None, shape) for shape in NEW_SHAPES]
        colours, shapes = SEEN_COLOURS, NEW_SHAPES + SEEN_SHAPES
    elif split == "task_B":
        colours, shapes = (NEW_COLOURS + SEEN_COLOURS if variant == "gt" else NEW_COLOURS), SEEN_SHAPES
    elif variant in ("all", "gt") or split == "test":
        colours, shapes = everything
    else:
        colours, shapes = SEEN_COLOURS, SEEN_SHAPES
    return [(_name(c, s, words), _concept(c, s, bool(words)), c, s) for c in colours for s in shapes]


def vocabulary() -> dict[str, Any]:
    """The content of ``vocab.json`` (without the ``split`` / ``files`` keys)."""
    return {
        "colours": {"seen": list(SEEN_COLOURS), "rare": list(RARE_COLOURS), "task_B": list(NEW_COLOURS)},
        "shapes": {"seen": list(SEEN_SHAPES), "rare": list(RARE_SHAPES), "task_A": list(NEW_SHAPES)},
        "sizes": list(SIZES),
        "textures": {t: TEXTURE_WORDS[t] for t in TEXTURES},
        "backgrounds": list(BACKGROUNDS),
        "relations": list(RELATIONS),
        "rgb": {k: list(v) for k, v in RGB.items()},
        "synonyms": dict(SYNONYMS),
        "held_out_words": list(HELD_OUT_WORDS),
        "categories": {
            "seen": [n for n, *_ in detection_categories("train")],
            "rare": [n for n, c, *_ in detection_categories("test") if c == "rare"],
            "synonyms": [n for n, *_ in detection_categories("synonyms")],
            "task_A": [n for n, *_ in detection_categories("task_A")],
            "task_B": [n for n, *_ in detection_categories("task_B")],
        },
        "splits": {
            "train": "seen + rare concepts; detection.json names seen concepts only (rare objects are "
            "unannotated there), grounding / captions mention everything; detection_all.json adds the rare "
            "categories (the 'more detection data' arm)",
            "test": "same distribution as train (other images); detection.json has seen + rare categories "
            "(field 'concept')",
            "synonyms": "the images of 'test' (same seed); seen concepts named with held-out synonyms in "
            "detection.json and the captions; detection_seen_names.json: the same boxes under the training "
            "names",
            "task_A": "new class set: shapes never seen in training (shape-only names) among unannotated "
            "distractors of seen concepts",
            "task_B": "new class set: colours never seen in training x seen shapes, among unannotated "
            "distractors of seen concepts",
        },
    }


# ---------------------------------------------------------------------------------------------- scenes


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


@dataclasses.dataclass
class Scene:
    """An image and its objects in drawing order (later objects are in front)."""

    image: Image.Image
    width: int
    height: int
    background: str
    objects: list[SceneObject]
    occludes: frozenset[tuple[int, int]]  # (a, b): a is drawn after b and their masks intersect


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


def visible_masks(scene: Scene) -> list[np.ndarray]:
    """(height, width) bool masks of the pixels each object of ``scene`` shows in the image: its own mask
    (:func:`object_mask`) minus the masks of the objects drawn after it. These are exactly the pixels painted
    with the object's colours (``glip synth --masks`` writes them as COCO RLE ``segmentation``)."""
    masks = [object_mask(obj, scene.width, scene.height) for obj in scene.objects]
    covered = np.zeros((scene.height, scene.width), dtype=bool)
    visible: list[np.ndarray] = [covered] * len(masks)
    for index in range(len(masks) - 1, -1, -1):  # front to back
        visible[index] = masks[index] & ~covered
        covered = covered | masks[index]
    return visible


def _shade(colour: str) -> np.ndarray:
    """The darker second colour of striped / dotted textures."""
    return (np.asarray(RGB[colour], dtype=np.float64) * 0.5).astype(np.uint8)


def object_palette(obj: SceneObject) -> list[tuple[int, int, int]]:
    """The RGB values an object's pixels can have (base colour, plus the dark shade when textured)."""
    base = tuple(int(v) for v in RGB[obj.colour])
    return [base] if obj.texture == "solid" else [base, tuple(int(v) for v in _shade(obj.colour))]


def _paint(pixels: np.ndarray, obj: SceneObject, mask: np.ndarray) -> None:
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


def _background(rng: np.random.Generator, width: int, height: int) -> tuple[str, np.ndarray]:
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


def _concepts(split: str, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(colour, shape, role) of the objects of one image, before placement. An object repeats the colour and
    shape of an earlier one with probability ``REPEAT`` (plurals, and referring expressions that need a
    relation to single one out)."""

    def pick(values: Sequence[str]) -> str:
        return values[int(rng.integers(len(values)))]

    def draw(
        count: int, colours: Sequence[str], shapes: Sequence[str], role: str
    ) -> list[tuple[str, str, str]]:
        out: list[tuple[str, str, str]] = []
        for _ in range(count):
            if out and rng.random() < REPEAT:
                out.append(out[int(rng.integers(len(out)))])
            else:
                out.append((pick(colours), pick(shapes), role))
        return out

    if split in ("task_A", "task_B"):
        targets = int(rng.integers(1, MAX_OBJECTS))  # 1-4 targets
        distractors = int(rng.integers(0, min(2, MAX_OBJECTS - targets) + 1))
        colours, shapes = (SEEN_COLOURS, NEW_SHAPES) if split == "task_A" else (NEW_COLOURS, SEEN_SHAPES)
        out = draw(targets, colours, shapes, "target") + draw(
            distractors, SEEN_COLOURS, SEEN_SHAPES, "distractor"
        )
        return [out[i] for i in rng.permutation(len(out))]
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    return draw(count, SEEN_COLOURS + RARE_COLOURS, SEEN_SHAPES + RARE_SHAPES, "target")


def _rotation(shape: str, rng: np.random.Generator) -> float:
    if shape in ("square", "cross"):  # small tilts only: a square at 45 degrees would look like a diamond
        return math.radians(float(rng.uniform(-15, 15)))
    if shape in ("diamond", "heart"):
        return math.radians(float(rng.uniform(-10, 10)))
    return float(rng.uniform(0, 2 * math.pi))


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
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


def _seed_sequence(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SCENE_STREAM[split], int(index), stream])


def make_scene(seed: int, split: str, index: int, size: int = 320, random_aspect: bool = False) -> Scene:
    """Image ``index`` of ``split`` for ``seed``: a pure function of its arguments."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    rng = _seed_sequence(seed, split, index, 0)
    width = height = int(size)
    if random_aspect:
        short = int(round(size * float(rng.uniform(0.6, 1.0))))
        width, height = (size, short) if rng.random() < 0.5 else (short, size)
    background, pixels = _background(rng, width, height)
    side = min(width, height)
    objects: list[SceneObject] = []
    masks: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    for colour, shape, role in _concepts(split, rng):
        size_name = SIZES[int(rng.integers(len(SIZES)))]
        texture = TEXTURES[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
        low, high = SIZE_RANGES[size_name]
        radius = float(rng.uniform(low, high)) * side / 2
        angle = _rotation(shape, rng)
        tex_angle = float(rng.uniform(0, math.pi))
        tex_period = max(4.0, round(radius * float(rng.uniform(0.3, 0.45))))
        tex_phase = float(rng.uniform(0, 1))
        proto = SceneObject(
            shape, colour, size_name, texture, role, 0.0, 0.0, radius, angle, tex_angle, tex_period, tex_phase
        )
        for _attempt in range(30):  # place it where every object keeps MIN_VISIBLE of its pixels
            cx = float(rng.uniform(radius + 1, width - 2 - radius))
            cy = float(rng.uniform(radius + 1, height - 2 - radius))
            obj = dataclasses.replace(proto, cx=cx, cy=cy)
            mask = object_mask(obj, width, height)
            if not mask.any():
                continue
            if any(o.colour == colour for o in objects):  # objects of one colour never touch: they would
                grown = _dilate(mask, 2)  # look like one blob
                if any(o.colour == colour and (m & grown).any() for o, m in zip(objects, masks)):
                    continue
            left = [v & ~mask for v in visible]
            if all(v.sum() >= MIN_VISIBLE * m.sum() for v, m in zip(left, masks)):
                break
        else:
            continue  # no room: the image gets one object less
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        obj = dataclasses.replace(obj, box=box, area=int(mask.sum()))
        _paint(pixels, obj, mask)
        objects.append(obj)
        masks.append(mask)
        visible = [*left, mask.copy()]
    objects = [dataclasses.replace(o, visible=float(v.sum()) / o.area) for o, v in zip(objects, visible)]
    occludes = frozenset(
        (a, b) for a in range(len(masks)) for b in range(a) if bool((masks[a] & masks[b]).any())
    )
    return Scene(Image.fromarray(pixels, "RGB"), width, height, background, objects, occludes)


def relation_holds(relation: str, a: SceneObject, b: SceneObject, ia: int, ib: int, scene: Scene) -> bool:
    """Whether "a <relation> b" is true. left / right / above / below: the boxes are strictly apart on that
    axis; in front of / behind: one is drawn after the other and their masks intersect."""
    if relation == "left of":
        return a.box[2] < b.box[0]
    if relation == "right of":
        return a.box[0] > b.box[2]
    if relation == "above":
        return a.box[3] < b.box[1]
    if relation == "below":
        return a.box[1] > b.box[3]
    if relation == "in front of":
        return (ia, ib) in scene.occludes
    if relation == "behind":
        return (ib, ia) in scene.occludes
    raise ValueError(f"unknown relation {relation!r}")


# -------------------------------------------------------------------------------------------- captions


def _body(obj: SceneObject, attrs: Sequence[str], plural: bool, words: dict[str, str]) -> str:
    adjectives = []
    if "size" in attrs:
        adjectives.append(obj.size)
    if "texture" in attrs:
        adjectives.append(TEXTURE_WORDS[obj.texture])
    adjectives.append(obj.colour)
    noun = PLURALS[obj.shape] if plural else obj.shape
    return " ".join([words.get(w, w) for w in adjectives] + [noun])


def _article(body: str) -> str:
    return ("an " if body[0] in "aeiou" else "a ") + body


def _matches(a: SceneObject, b: SceneObject, attrs: Sequence[str]) -> bool:
    return (
        a.colour == b.colour
        and a.shape == b.shape
        and ("size" not in attrs or a.size == b.size)
        and ("texture" not in attrs or a.texture == b.texture)
    )


def build_caption(
    scene: Scene, rng: np.random.Generator, words: dict[str, str] | None = None, mention_all: bool = False
) -> tuple[str, list[tuple[str, tuple[int, int], tuple[int, ...]]]]:
    """A caption of ``scene`` and its phrases ``(text, (beg, end), object indices)``, with
    ``caption[beg:end] == text``.

    A phrase ("a small red circle", "two striped green stars") denotes *every* object matching what it says,
    unless a relation singles one out ("the red circle left of a blue square ... and the other red circle").
    Relations are always true (:func:`relation_holds`). ``mention_all=False`` sometimes leaves objects out
    (the caption then names only some of them: unnamed objects are not annotated).
    """
    words = words or {}
    objs = scene.objects
    n = len(objs)
    partial = not mention_all and n > 1 and rng.random() < 0.3
    covered: set[int] = set()
    groups: list[tuple[tuple[str, ...], list[int]]] = []
    order = [int(i) for i in rng.permutation(n)]
    for i in order:
        if i in covered or (partial and rng.random() < 0.5):
            continue
        attrs = tuple(a for a, p in (("size", 0.5), ("texture", 0.35)) if rng.random() < p)
        members = [j for j in range(n) if _matches(objs[j], objs[i], attrs)]
        if covered & set(members):  # the full description never reaches an object already named
            attrs = ("size", "texture")
            members = [j for j in range(n) if _matches(objs[j], objs[i], attrs)]
        groups.append((attrs, members))
        covered.update(members)
    if not groups and n:
        attrs = ("size", "texture") if rng.random() < 0.5 else ()
        groups.append((attrs, [j for j in range(n) if _matches(objs[j], objs[order[0]], attrs)]))

    def phrase(attrs: Sequence[str], members: Sequence[int], determiner: str) -> str:
        body = _body(objs[members[0]], attrs, len(members) > 1, words)
        if len(members) > 1:
            body = f"{NUMBERS[len(members)]} {body}"
            return f"{determiner} {body}" if determiner in ("the", "the other") else body
        if determiner == "a":
            return _article(body)
        return f"{determiner} {body}"

    def relation_text(relation: str) -> str:
        forms = RELATION_WORDS[relation]
        return forms[int(rng.integers(len(forms)))]

    # a clause is a list of (text, object indices or None)
    clauses: list[list[tuple[str, tuple[int, ...] | None]]] = []
    used: set[int] = set()
    singles = [g for g, (_, m) in enumerate(groups) if len(m) == 1]
    for g in [int(k) for k in rng.permutation(len(groups))]:
        if g in used:
            continue
        attrs, members = groups[g]
        used.add(g)
        done = False
        candidates = [s for s in singles if s not in used]
        if len(members) >= 2 and candidates and rng.random() < 0.5:  # a relation singles out one member
            for s in [candidates[int(k)] for k in rng.permutation(len(candidates))]:
                b = groups[s][1][0]
                for relation in [RELATIONS[int(k)] for k in rng.permutation(len(RELATIONS))]:
                    hits = [m for m in members if relation_holds(relation, objs[m], objs[b], m, b, scene)]
                    if len(hits) != 1:
                        continue
                    rest = tuple(m for m in members if m != hits[0])
                    b_det = "a" if rng.random() < 0.5 else "the"
                    clauses.append(
                        [
                            (phrase(attrs, hits, "the"), tuple(hits)),
                            (f" {relation_text(relation)} ", None),
                            (phrase(groups[s][0], [b], b_det), (b,)),
                        ]
                    )
                    if mention_all or rng.random() < 0.7:
                        clauses.append([(phrase(attrs, rest, "the other"), rest)])
                    used.add(s)
                    done = True
                    break
                if done:
                    break
        elif len(members) == 1 and candidates and rng.random() < 0.4:  # "a red circle above the blue star"
            a = members[0]
            for s in [candidates[int(k)] for k in rng.permutation(len(candidates))]:
                b = groups[s][1][0]
                true = [r for r in RELATIONS if relation_holds(r, objs[a], objs[b], a, b, scene)]
                if not true:
                    continue
                relation = true[int(rng.integers(len(true)))]
                a_det = "the" if rng.random() < 0.6 else "a"
                b_det = "a" if rng.random() < 0.5 else "the"
                clauses.append(
                    [
                        (phrase(attrs, members, a_det), (a,)),
                        (f" {relation_text(relation)} ", None),
                        (phrase(groups[s][0], [b], b_det), (b,)),
                    ]
                )
                used.add(s)
                done = True
                break
        if not done:
            determiner = "a" if rng.random() < 0.8 else "the"
            clauses.append([(phrase(attrs, members, determiner), tuple(members))])

    prefix = ("", "", "", "a picture of ", "an image with ", "this shows ")[int(rng.integers(6))]
    pieces: list[tuple[str, tuple[int, ...] | None]] = [(prefix, None)]
    for k, clause in enumerate(clauses):
        if k:
            pieces.append((" and " if k == len(clauses) - 1 else ", ", None))
        pieces.extend(clause)
    pieces.append(("." if rng.random() < 0.5 else "", None))
    caption, phrases = "", []
    for text, members_of in pieces:
        if members_of is not None:
            phrases.append((text, (len(caption), len(caption) + len(text)), members_of))
        caption += text
    return caption, phrases


# ----------------------------------------------------------------------------------------------- files


def _coco_box(box: tuple[int, int, int, int]) -> list[int]:
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1 + 1, y2 - y1 + 1]  # legacy: x2 = x + w - 1


def _odvg_box(box: tuple[int, int, int, int]) -> list[int]:
    x1, y1, x2, y2 = box
    return [x1, y1, x2 + 1, y2 + 1]  # continuous xyxy; the ODVG loader subtracts 1


def _annotation(
    ann_id: int, image_id: int, obj: SceneObject, category_id: int, **extra: Any
) -> dict[str, Any]:
    return {
        "id": ann_id,
        "image_id": image_id,
        "bbox": _coco_box(obj.box),
        "area": obj.area,
        "iscrowd": 0,
        "category_id": category_id,
        **extra,
    }


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from glip.data.masks import encode_rle

    return encode_rle(mask)


class _Detection:
    """A COCO detection file (and optionally its ODVG records) under one category list."""

    def __init__(self, categories: list[tuple[str, str, str | None, str]], shape_only: bool) -> None:
        self.categories = categories
        self.ids = {
            (None if shape_only else colour, shape): i + 1
            for i, (_, _, colour, shape) in enumerate(categories)
        }
        self.shape_only = shape_only
        self.coco: dict[str, Any] = {
            "info": INFO,
            "images": [],
            "annotations": [],
            "categories": [
                {"id": i + 1, "name": name, "supercategory": "shape", "concept": concept}
                for i, (name, concept, _, _) in enumerate(categories)
            ],
        }
        self.odvg: list[dict[str, Any]] = []

    def add(self, image: dict[str, Any], scene: Scene, masks: list[np.ndarray] | None = None) -> None:
        self.coco["images"].append(dict(image))
        instances = []
        for index, obj in enumerate(scene.objects):
            if obj.role != "target":
                continue  # distractors of the task splits are not annotated
            category = self.ids.get((None if self.shape_only else obj.colour, obj.shape))
            if category is None:
                continue  # e.g. rare concepts in the train detection file
            annotations = self.coco["annotations"]
            extra = {} if masks is None else {"segmentation": _rle(masks[index])}
            annotations.append(_annotation(len(annotations) + 1, image["id"], obj, category, **extra))
            name = self.categories[category - 1][0]
            instances.append({"bbox": _odvg_box(obj.box), "label": category - 1, "category": name})
        if instances:  # ODVG detection records: images with at least one box
            record = {"filename": image["file_name"], "height": image["height"], "width": image["width"]}
            self.odvg.append({**record, "detection": {"instances": instances}})

    def label_map(self) -> dict[str, str]:
        return {str(i): name for i, (name, *_) in enumerate(self.categories)}


class _Grounding:
    """grounding.json (MDETR) and grounding.odvg.jsonl."""

    def __init__(self) -> None:
        self.mdetr: dict[str, Any] = {
            "info": INFO,
            "images": [],
            "annotations": [],
            "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
        }
        self.odvg: list[dict[str, Any]] = []

    def add(self, image: dict[str, Any], scene: Scene, caption: str, phrases: list) -> None:
        spans = [[list(span)] for _, span, _ in phrases]
        self.mdetr["images"].append(
            {**image, "caption": caption, "tokens_positive_eval": spans, "dataset_name": "synthetic"}
        )
        annotations = self.mdetr["annotations"]
        regions = []
        for text, span, members in phrases:
            for m in members:
                annotations.append(
                    _annotation(
                        len(annotations) + 1,
                        image["id"],
                        scene.objects[m],
                        1,
                        tokens_positive=[list(span)],
                        phrase=text,
                    )
                )
            boxes = [_odvg_box(scene.objects[m].box) for m in members]
            regions.append(
                {
                    "bbox": boxes[0] if len(boxes) == 1 else boxes,
                    "phrase": text,
                    "tokens_positive": [list(span)],
                }
            )
        record = {"filename": image["file_name"], "height": image["height"], "width": image["width"]}
        self.odvg.append({**record, "grounding": {"caption": caption, "regions": regions}})


class _Captions:
    """captions.jsonl and its hidden ground truth captions_gt.json (every object, its attributes and span)."""

    def __init__(self, categories: list[tuple[str, str, str | None, str]]) -> None:
        self.ids = {(colour, shape): i + 1 for i, (_, _, colour, shape) in enumerate(categories)}
        self.gt = _Detection(categories, False).coco
        self.lines: list[dict[str, str]] = []

    def add(self, image: dict[str, Any], scene: Scene, caption: str, phrases: list) -> None:
        self.lines.append({"image": image["file_name"], "caption": caption})
        self.gt["images"].append({**image, "caption_text": caption})
        phrase_of = {m: (text, span) for text, span, members in phrases for m in members}
        annotations = self.gt["annotations"]
        for m, obj in enumerate(scene.objects):
            text, span = phrase_of[m]
            attributes = {
                "colour": obj.colour,
                "shape": obj.shape,
                "size": obj.size,
                "texture": obj.texture,
                "role": obj.role,
                "visible": round(obj.visible, 4),
            }
            annotations.append(
                _annotation(
                    len(annotations) + 1,
                    image["id"],
                    obj,
                    self.ids[(obj.colour, obj.shape)],
                    attributes=attributes,
                    tokens_positive=[list(span)],
                    phrase=text,
                )
            )


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=True) + "\n", encoding="utf-8")


def _dump_lines(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records), encoding="utf-8")


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    images = out / "images"
    existing = list(out.iterdir()) if out.exists() else []
    if existing and not overwrite:
        raise FileExistsError(
            f"{out} is not empty (pass overwrite=True / --overwrite to replace a generated set)"
        )
    if existing:  # remove what a previous run wrote, nothing else
        for name in _FILES:
            (out / name).unlink(missing_ok=True)
        if images.is_dir():
            for path in images.iterdir():
                if _IMAGE_NAME.match(path.name):
                    path.unlink()
    images.mkdir(parents=True, exist_ok=True)


def generate(
    out_dir: str | Path,
    num_images: int,
    seed: int = 0,
    size: int = 320,
    split: str = "train",
    random_aspect: bool = False,
    overwrite: bool = False,
    masks: bool = False,
) -> dict[str, Any]:
    """Write ``num_images`` scenes of ``split`` to ``out_dir`` (see the module docstring and
    ``docs/synthetic.md``). Returns ``{"out_dir", "split", "files": {name: path}, "num_images", "num_objects",
    "detection_boxes", "detection_categories", "grounding_boxes", "grounding_phrases"}``.

    ``masks=True`` (``glip synth --masks``) adds each annotation's exact instance mask to the COCO detection
    files (``detection.json`` and ``detection_all.json`` / ``detection_seen_names.json``) as a compressed RLE
    ``segmentation``: the pixels the object shows in the image (:func:`visible_masks`; needs pycocotools).
    Without it every file is byte-identical to what earlier versions wrote.

    Raises:
        ValueError: bad ``num_images`` / ``seed`` / ``size`` / ``split``.
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is False (with ``overwrite`` only the
            files a previous run writes are replaced).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    if int(num_images) < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if int(size) < 64:
        raise ValueError(f"size must be >= 64 pixels, got {size}")
    if masks:
        from glip.data.masks import _mask_api

        _mask_api()  # ImportError now, before any file is written
    out = Path(out_dir)
    _prepare(out, overwrite)
    words = _words(split)
    detection = _Detection(detection_categories(split), shape_only=split == "task_A")
    extra_name = {"train": "detection_all.json", "synonyms": "detection_seen_names.json"}.get(split)
    extra = _Detection(detection_categories(split, "all" if split == "train" else "seen_names"), False)
    grounding = _Grounding()
    captions = _Captions(detection_categories(split, "gt"))
    num_objects = 0
    for index in range(int(num_images)):
        scene = make_scene(seed, split, index, size, random_aspect)
        num_objects += len(scene.objects)
        file_name = f"{split}_{index:06d}.png"
        scene.image.save(out / "images" / file_name, format="PNG", compress_level=1)
        image = {"id": index + 1, "file_name": file_name, "width": scene.width, "height": scene.height}
        instance_masks = visible_masks(scene) if masks else None
        detection.add(image, scene, instance_masks)
        if extra_name:
            extra.add(image, scene, instance_masks)
        grounding.add(image, scene, *build_caption(scene, _seed_sequence(seed, split, index, 1), words))
        caption_rng = _seed_sequence(seed, split, index, 2)
        captions.add(image, scene, *build_caption(scene, caption_rng, words, mention_all=True))

    files: dict[str, str] = {"images": str(out / "images")}
    outputs: list[tuple[str, Any]] = [("detection.json", detection.coco)]
    if extra_name:
        outputs.append((extra_name, extra.coco))
    outputs += [
        ("detection.odvg.jsonl", detection.odvg),
        ("label_map.json", detection.label_map()),
        ("grounding.json", grounding.mdetr),
        ("grounding.odvg.jsonl", grounding.odvg),
        ("captions.jsonl", captions.lines),
        ("captions_gt.json", captions.gt),
    ]
    for name, data in outputs:
        (_dump_lines if name.endswith(".jsonl") else _dump)(out / name, data)
        files[name] = str(out / name)
    settings = {
        "split": split,
        "seed": int(seed),
        "num_images": int(num_images),
        "size": int(size),
        "random_aspect": bool(random_aspect),
    }
    if masks:  # only then: files written without masks stay byte-identical
        settings["masks"] = True
    vocab = {**settings, **vocabulary(), "files": sorted(n for n in files if n != "images")}
    (out / "vocab.json").write_text(json.dumps(vocab, indent=2) + "\n", encoding="utf-8")
    files["vocab.json"] = str(out / "vocab.json")
    counts = {
        "num_images": int(num_images),
        "num_objects": num_objects,
        "detection_boxes": len(detection.coco["annotations"]),
        "detection_categories": len(detection.categories),
        "grounding_boxes": len(grounding.mdetr["annotations"]),
        "grounding_phrases": sum(len(r["grounding"]["regions"]) for r in grounding.odvg),
    }
    (out / "README.txt").write_text(_readme(settings, counts, extra_name), encoding="utf-8")
    files["README.txt"] = str(out / "README.txt")
    return {"out_dir": str(out), "split": split, "files": files, **counts}


_README_FILES = {
    "images/": "PNG images (every file_name / image path below is relative to images/)",
    "detection.json": "COCO detection (bbox [x, y, w, h], x2 = x + w - 1; 'concept' of each category)",
    "detection_all.json": "COCO detection with the rare categories too (rare concepts as detection data)",
    "detection_seen_names.json": "the boxes of detection.json under the training names (paired control)",
    "detection.odvg.jsonl": "the boxes of detection.json as ODVG detection records (label_map.json)",
    "grounding.json": "MDETR-style grounding: a caption per image, tokens_positive char spans per box",
    "grounding.odvg.jsonl": "the same captions and boxes as ODVG grounding records",
    "captions.jsonl": "caption-only {image, caption} lines (no boxes), for self-training",
    "captions_gt.json": "hidden ground truth of captions.jsonl: every object and its span in that caption",
    "vocab.json": "vocabulary splits: seen / rare concepts, held-out synonyms, task class sets",
}


def _readme(settings: dict[str, Any], counts: dict[str, int], extra_name: str | None) -> str:
    split = settings["split"]
    aspect = " --random-aspect" if settings["random_aspect"] else ""
    aspect += " --masks" if settings.get("masks") else ""
    names = [n for n in _README_FILES if n not in ("detection_all.json", "detection_seen_names.json")]
    if extra_name:
        names.insert(2, extra_name)
    width = max(len(n) for n in names) + 2
    lines = [
        "glip synthetic grounding world",
        f"split {split}, seed {settings['seed']}, {settings['num_images']} images of {settings['size']} px"
        + (" (random aspect)" if settings["random_aspect"] else "")
        + (", with instance masks" if settings.get("masks") else ""),
        f"{counts['num_objects']} objects, {counts['detection_boxes']} detection boxes in "
        f"{counts['detection_categories']} categories, {counts['grounding_phrases']} grounding phrases",
        "",
        *(f"{name.ljust(width)}{_README_FILES[name]}" for name in names),
        "",
        f"regenerate: glip synth --out DIR --split {split} --seed {settings['seed']} "
        f"--num-images {settings['num_images']} --size {settings['size']}{aspect}",
    ]
    if split == "train":
        lines += [
            "train:      glip train --preset tiny --train-ann DIR/detection.json DIR/grounding.json \\",
            "                --train-images DIR/images --out runs/synth",
        ]
    elif split in ("task_A", "task_B"):
        lines += [
            "few-shot:   glip train --preset tiny --init runs/synth/model --train-ann DIR/detection.json \\",
            "                --train-images DIR/images --shots 5 --out runs/synth_" + split,
        ]
    lines += [
        "evaluate:   glip eval --task coco --ann DIR/detection.json --images DIR/images \\",
        "                --model runs/synth/model",
        "See docs/synthetic.md.",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- CLI

EXAMPLES = """examples:
  glip synth --out synth/train --num-images 5000 --seed 0                 # seen + rare concepts
  glip synth --out synth/test --num-images 500 --seed 0 --split test      # evaluation (seen + rare names)
  glip synth --out synth/syn --num-images 500 --seed 0 --split synonyms   # test's images, held-out names
  glip synth --out synth/task_A_train --num-images 200 --seed 1 --split task_A   # new shapes (few-shot)
  glip synth --out synth/task_A_val --num-images 200 --seed 2 --split task_A

splits: train (detection names seen concepts only; rare concepts appear in grounding and captions),
test, synonyms (same seed = test's images), task_A (new shapes), task_B (new colours). See docs/synthetic.md.
"""


def add_synth_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``synth`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    text = "generate a deterministic synthetic grounding dataset (shapes, exact boxes, captions)"
    parser = subparsers.add_parser(
        "synth",
        help=text,
        description=text,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="output directory (must be empty unless --overwrite)")
    parser.add_argument("--num-images", type=int, default=1000, help="number of images (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, default=320, help="image side in pixels (default 320)")
    parser.add_argument(
        "--split", choices=SPLITS, default="train", help="vocabulary split (default train; see below)"
    )
    parser.add_argument(
        "--random-aspect", action="store_true", help="longer side --size, shorter side 0.6-1.0 of it"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a generated set already in --out")
    parser.add_argument(
        "--masks",
        action="store_true",
        help="add exact instance masks (COCO RLE 'segmentation') to the detection files (needs pycocotools)",
    )
    return parser


def run_synth(args: argparse.Namespace) -> int:
    """``glip synth``: 0 on success, 2 on bad arguments or a non-empty output directory."""
    try:
        result = generate(
            args.out,
            args.num_images,
            seed=args.seed,
            size=args.size,
            split=args.split,
            random_aspect=args.random_aspect,
            overwrite=args.overwrite,
            masks=getattr(args, "masks", False),
        )
    except (ValueError, FileExistsError, ImportError) as exc:
        print(f"glip synth: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {result['num_images']} {result['split']} images ({result['num_objects']} objects, "
        f"{result['detection_boxes']} detection boxes, {result['grounding_phrases']} grounding phrases) "
        f"to {result['out_dir']}"
    )
    return 0
