"""The vocabulary of the synthetic world: colours, shapes, sizes, textures, relations, the seen / rare /
held-out splits and the detection categories of every split.

Standard library only (no torch, numpy or PIL): the demo model and anything that only needs names import this
module alone.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BACKGROUNDS",
    "HELD_OUT_WORDS",
    "NEW_COLOURS",
    "NEW_SHAPES",
    "NUMBERS",
    "PLURALS",
    "RARE_COLOURS",
    "RARE_SHAPES",
    "RELATIONS",
    "RELATION_WORDS",
    "RGB",
    "SEEN_COLOURS",
    "SEEN_SHAPES",
    "SIZES",
    "SPLITS",
    "SYNONYMS",
    "TEXTURES",
    "TEXTURE_WORDS",
    "detection_categories",
    "split_words",
    "vocabulary",
]

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


def split_words(split: str) -> dict[str, str]:
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
    words = {} if variant == "seen_names" else split_words(split)
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
