"""Scenes of the synthetic world: which objects an image has, where they go, and what is true of them.

:func:`make_scene` is a pure function of ``(seed, split, index, size, random_aspect)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from glip.data.synthetic.geometry import SceneObject, dilate, object_mask
from glip.data.synthetic.painting import paint_background, paint_object
from glip.data.synthetic.vocabulary import (
    NEW_COLOURS,
    NEW_SHAPES,
    RARE_COLOURS,
    RARE_SHAPES,
    SEEN_COLOURS,
    SEEN_SHAPES,
    SIZES,
    SPLITS,
    TEXTURES,
)

#: Extent (diameter of the circle a shape is inscribed in) as a fraction of the shorter image side.
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.10, 0.17), "large": (0.26, 0.38)}
MAX_OBJECTS = 5
MIN_VISIBLE = 0.5  # every object keeps at least half of its pixels visible
REPEAT = 0.25  # probability that an object repeats the colour and shape of an earlier one
_SCENE_STREAM = {"train": 0, "test": 1, "synonyms": 1, "task_A": 2, "task_B": 3}  # synonyms = test's images


@dataclasses.dataclass
class Scene:
    """An image and its objects in drawing order (later objects are in front)."""

    image: Image.Image
    width: int
    height: int
    background: str
    objects: list[SceneObject]
    occludes: frozenset[tuple[int, int]]  # (a, b): a is drawn after b and their masks intersect


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


def scene_rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    """The generator of one stream of image ``index`` (0: the scene, 1: its caption, 2: its caption-only
    caption); ``synonyms`` shares the streams of ``test``."""
    return np.random.default_rng([int(seed), _SCENE_STREAM[split], int(index), stream])


def make_scene(seed: int, split: str, index: int, size: int = 320, random_aspect: bool = False) -> Scene:
    """Image ``index`` of ``split`` for ``seed``: a pure function of its arguments."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    rng = scene_rng(seed, split, index, 0)
    width = height = int(size)
    if random_aspect:
        short = int(round(size * float(rng.uniform(0.6, 1.0))))
        width, height = (size, short) if rng.random() < 0.5 else (short, size)
    background, pixels = paint_background(rng, width, height)
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
                grown = dilate(mask, 2)  # look like one blob
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
        paint_object(pixels, obj, mask)
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
