"""Synthetic VL-understanding data: questions with answers and captions about the scenes of ``glip synth``.

The scenes are those of :func:`glip.data.synthetic.scene.make_scene` (same seed / split / index -> same image).
On top of each scene this module writes

* **questions** (:func:`scene_questions`, :func:`sample_question`), each with its answer, its entity phrase
  (char span in the question) and the boxes of the objects that phrase denotes (for grounded VQA):

  ======== ====================================== ============ ===================================
  kind     question                                entity       answer
  ======== ====================================== ============ ===================================
  colour   "what colour is the circle?"            "the circle" the colour of the only circle
  shape    "what shape is the blue object?"        "the blue    the shape of the only blue object
                                                   object"
  count    "how many stars are there?"             "stars"      "one" ... "five" (every star)
  count    "how many red objects are there?"       "red         "one" ... "five"
                                                   objects"
  ======== ====================================== ============ ===================================

  A colour (shape) question is asked only when exactly one object has that shape (colour), so every answer
  is determined by the image; count questions are asked about shapes / colours present in the image.
* **captions** (:func:`canonical_caption`): every object named "a <colour> <shape>", left to right (by box
  centre), e.g. "a red circle, a blue square and an orange star": one caption per image, so exact match is a
  meaningful metric. Each phrase carries its char span and its object's box.
* **detection prompts** (:func:`detection_names`): the class-name prompt of detection-as-grounding over
  shapes ("circle. square. ...") or colour-shape names ("red circle. ...").

:class:`SyntheticVL` serves any of the three as training / evaluation samples. Everything is a pure function
of ``(seed, split, index, size)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from glip.config import InputConfig
from glip.data.synthetic.scene import Scene, make_scene
from glip.data.synthetic.vocabulary import PLURALS, RARE_COLOURS, RARE_SHAPES, SEEN_COLOURS, SEEN_SHAPES
from glip.data.transforms import apply_transform
from glip.data.types import GroundingRecord, Sample, make_sample
from glip.text.prompts import build_class_caption

__all__ = [
    "ANSWERS",
    "COUNT_WORDS",
    "QUESTION_KINDS",
    "TASKS",
    "Caption",
    "Question",
    "SyntheticVL",
    "VLItem",
    "canonical_caption",
    "detection_names",
    "sample_question",
    "scene_questions",
]

COLOURS: tuple[str, ...] = SEEN_COLOURS + RARE_COLOURS
SHAPES: tuple[str, ...] = SEEN_SHAPES + RARE_SHAPES
COUNT_WORDS: tuple[str, ...] = ("one", "two", "three", "four", "five")
#: The answer vocabulary of the synthetic VQA task (index = class id of the VQA head).
ANSWERS: tuple[str, ...] = COLOURS + SHAPES + COUNT_WORDS
QUESTION_KINDS: tuple[str, ...] = ("colour", "shape", "count")
TASKS: tuple[str, ...] = ("vqa", "caption", "detection")
#: In questions and datasets every scene uses the object stream of ``glip synth`` (seen + rare concepts).
_QUESTION_SPLITS = ("train", "test")

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Question:
    """A question about one scene.

    text:    the question, e.g. "what colour is the circle?".
    answer:  one of :data:`ANSWERS`.
    kind:    one of :data:`QUESTION_KINDS`.
    entity:  (beg, end) char span of the entity phrase in ``text`` (``text[beg:end]`` == "the circle").
    objects: indices into ``scene.objects`` of the objects the entity denotes.
    boxes:   their boxes, inclusive pixel ``x1, y1, x2, y2`` in the scene's frame.
    """

    text: str
    answer: str
    kind: str
    entity: tuple[int, int]
    objects: tuple[int, ...]
    boxes: tuple[Box, ...]


@dataclass(frozen=True)
class Caption:
    """A caption naming every object: ``phrases[i]`` = (text, (beg, end), object index), ``boxes[i]`` its box."""

    text: str
    phrases: tuple[tuple[str, tuple[int, int], int], ...]
    boxes: tuple[Box, ...]


def _question(
    scene: Scene, prefix: str, entity: str, suffix: str, answer: str, kind: str, objects
) -> Question:
    text = prefix + entity + suffix
    beg = len(prefix)
    members = tuple(int(i) for i in objects)
    return Question(
        text, answer, kind, (beg, beg + len(entity)), members, tuple(scene.objects[i].box for i in members)
    )


def scene_questions(scene: Scene) -> list[Question]:
    """Every question :mod:`glip.data.synthetic.vl` asks about ``scene``, in a fixed order."""
    objects = scene.objects
    questions: list[Question] = []
    for shape in SHAPES:
        members = [i for i, o in enumerate(objects) if o.shape == shape]
        if len(members) == 1:
            colour = objects[members[0]].colour
            questions.append(
                _question(scene, "what colour is ", f"the {shape}", "?", colour, "colour", members)
            )
    for colour in COLOURS:
        members = [i for i, o in enumerate(objects) if o.colour == colour]
        if len(members) == 1:
            shape = objects[members[0]].shape
            questions.append(
                _question(scene, "what shape is ", f"the {colour} object", "?", shape, "shape", members)
            )
    for shape in SHAPES:
        members = [i for i, o in enumerate(objects) if o.shape == shape]
        if members:
            count = COUNT_WORDS[len(members) - 1]
            questions.append(
                _question(scene, "how many ", PLURALS[shape], " are there?", count, "count", members)
            )
    for colour in COLOURS:
        members = [i for i, o in enumerate(objects) if o.colour == colour]
        if members:
            count = COUNT_WORDS[len(members) - 1]
            questions.append(
                _question(scene, "how many ", f"{colour} objects", " are there?", count, "count", members)
            )
    return questions


def sample_question(scene: Scene, rng: np.random.Generator) -> Question:
    """One question: a kind uniformly among those ``scene`` allows, then a question of that kind uniformly."""
    questions = scene_questions(scene)
    if not questions:
        raise ValueError("the scene has no object to ask about")
    kinds = [k for k in QUESTION_KINDS if any(q.kind == k for q in questions)]
    kind = kinds[int(rng.integers(len(kinds)))]
    pool = [q for q in questions if q.kind == kind]
    return pool[int(rng.integers(len(pool)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def canonical_caption(scene: Scene) -> Caption:
    """ "a red circle, a blue square and an orange star": every object, left to right by box centre."""

    def centre_x(i: int) -> tuple[float, float, int]:
        x1, y1, x2, y2 = scene.objects[i].box
        return ((x1 + x2) / 2, (y1 + y2) / 2, i)

    order = sorted(range(len(scene.objects)), key=centre_x)
    text, phrases = "", []
    for k, i in enumerate(order):
        if k:
            text += " and " if k == len(order) - 1 else ", "
        obj = scene.objects[i]
        phrase = f"{_article(obj.colour)} {obj.colour} {obj.shape}"
        phrases.append((phrase, (len(text), len(text) + len(phrase)), i))
        text += phrase
    return Caption(text, tuple(phrases), tuple(scene.objects[i].box for _, _, i in phrases))


def detection_names(vocabulary: str = "shape") -> tuple[str, ...]:
    """Category names of the detection task: ``"shape"`` (7 shapes) or ``"colour_shape"`` (42 names)."""
    if vocabulary == "shape":
        return SHAPES
    if vocabulary == "colour_shape":
        return tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
    raise ValueError(f"unknown detection vocabulary {vocabulary!r} (shape or colour_shape)")


@dataclass
class VLItem:
    """One sample of :class:`SyntheticVL`.

    sample:   image (3, H, W) normalised; ``caption`` = the question / caption / class prompt; ``target`` =
              the grounded boxes (question entity / every object / every object with its category).
    answer:   the answer (task "vqa") or None.
    kind:     question kind (task "vqa") or the task name.
    question: the :class:`Question` (task "vqa"); caption: the :class:`Caption` (task "caption").
    """

    sample: Sample
    answer: str | None
    kind: str
    question: Question | None = None
    caption: Caption | None = None


class SyntheticVL(Dataset):
    """Synthetic VQA / captioning / detection samples over the scenes of ``glip synth``.

    Args:
        task: "vqa", "caption" or "detection".
        num_images: images ``0 .. num_images - 1`` of ``split``.
        seed, split: as ``glip synth`` ("train" or "test").
        size: scene side in pixels; images are fed at this size (no resizing, no flip: captions name objects
            left to right).
        input_config: normalisation (pixel mean / std, BGR x255) of the model.
        vocabulary: detection category names (see :func:`detection_names`).
        questions_per_image: task "vqa": distinct samples per image (item ``k`` is image ``k // q``).
    """

    def __init__(
        self,
        task: str,
        num_images: int,
        seed: int = 0,
        split: str = "train",
        size: int = 256,
        input_config: InputConfig | None = None,
        vocabulary: str = "shape",
        questions_per_image: int = 1,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} (one of {', '.join(TASKS)})")
        if split not in _QUESTION_SPLITS:
            raise ValueError(
                f"split must be one of {_QUESTION_SPLITS} (the seen + rare world), got {split!r}"
            )
        if num_images < 1 or questions_per_image < 1:
            raise ValueError("num_images and questions_per_image must be >= 1")
        self.task, self.num_images, self.seed, self.split, self.size = task, num_images, seed, split, size
        self.input = input_config or InputConfig()
        self.vocabulary = vocabulary
        self.names = detection_names(vocabulary)
        self.prompt = build_class_caption(self.names)
        self.per_image = questions_per_image if task == "vqa" else 1
        self._scenes: dict[int, Scene] = {}

    def __len__(self) -> int:
        return self.num_images * self.per_image

    def for_task(self, task: str, questions_per_image: int = 1) -> SyntheticVL:
        """The same images for another task (aligned: its item k is image k // questions_per_image), sharing
        this dataset's scene cache, so that training several tasks on the same images draws each scene once,
        and holds it once."""
        other = SyntheticVL(
            task,
            self.num_images,
            self.seed,
            self.split,
            self.size,
            self.input,
            self.vocabulary,
            questions_per_image,
        )
        other._scenes = self._scenes
        return other

    def scene(self, index: int) -> Scene:
        """The scene of image ``index`` (cached)."""
        if index not in self._scenes:
            self._scenes[index] = make_scene(self.seed, self.split, index, self.size)
        return self._scenes[index]

    def question(self, item: int) -> Question:
        """The question of item ``item`` (task "vqa"): deterministic in (seed, split, item)."""
        rng = np.random.default_rng([int(self.seed), _QUESTION_SPLITS.index(self.split), int(item), 7])
        return sample_question(self.scene(item // self.per_image), rng)

    def _record(self, scene: Scene, text: str, boxes: Sequence[Box], spans, labels, image_id: str) -> Sample:
        record = GroundingRecord(
            image=scene.image,
            boxes=torch.tensor([list(b) for b in boxes], dtype=torch.float32).reshape(-1, 4),
            labels=torch.tensor(list(labels), dtype=torch.int64),
            tokens_positive=[list(s) for s in spans],
            caption=text,
            image_id=image_id,
        )
        record = apply_transform(
            record,
            self.size,
            self.size,
            False,
            self.input.pixel_mean,
            self.input.pixel_std,
            self.input.to_bgr255,
        )
        return make_sample(record)

    def __getitem__(self, item: int) -> VLItem:
        if not 0 <= item < len(self):
            raise IndexError(f"item {item} out of range for {len(self)} samples")
        index = item // self.per_image
        scene = self.scene(index)
        image_id = f"{self.split}_{index:06d}"
        if self.task == "vqa":
            q = self.question(item)
            sample = self._record(
                scene, q.text, q.boxes, [[q.entity]] * len(q.boxes), [1] * len(q.boxes), image_id
            )
            return VLItem(sample, q.answer, q.kind, question=q)
        if self.task == "caption":
            c = canonical_caption(scene)
            spans = [[span] for _, span, _ in c.phrases]
            sample = self._record(scene, c.text, c.boxes, spans, range(1, len(c.boxes) + 1), image_id)
            return VLItem(sample, None, "caption", caption=c)
        labels, spans, boxes = [], [], []
        for obj in scene.objects:
            name = obj.shape if self.vocabulary == "shape" else f"{obj.colour} {obj.shape}"
            label = self.names.index(name)
            labels.append(label + 1)
            spans.append([self.prompt.spans[label]])
            boxes.append(obj.box)
        sample = self._record(scene, self.prompt.caption, boxes, spans, labels, image_id)
        return VLItem(sample, None, "detection")
