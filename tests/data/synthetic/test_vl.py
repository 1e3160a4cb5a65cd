"""Synthetic VQA / caption / detection data: determinism, answers, spans and boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glip.data.synthetic.scene import make_scene
from glip.data.synthetic.vl import (
    ANSWERS,
    SyntheticVL,
    canonical_caption,
    detection_names,
    sample_question,
    scene_questions,
)
from glip.data.synthetic.vocabulary import PLURALS
from glip.text.tokenizer import get_tokenizer

SIZE = 128


def test_questions_are_answered_by_the_scene():
    seen_kinds = set()
    for index in range(30):
        scene = make_scene(3, "train", index, SIZE)
        objs = scene.objects
        for q in scene_questions(scene):
            seen_kinds.add(q.kind)
            assert q.answer in ANSWERS
            entity = q.text[q.entity[0] : q.entity[1]]
            assert q.boxes == tuple(objs[i].box for i in q.objects)
            if q.kind == "colour":  # "what colour is the circle?": the only circle
                shape = entity.removeprefix("the ")
                members = [i for i, o in enumerate(objs) if o.shape == shape]
                assert q.text == f"what colour is the {shape}?" and members == list(q.objects)
                assert q.answer == objs[members[0]].colour
            elif q.kind == "shape":
                colour = entity.removeprefix("the ").removesuffix(" object")
                members = [i for i, o in enumerate(objs) if o.colour == colour]
                assert members == list(q.objects) and q.answer == objs[members[0]].shape
            else:
                plural = {v: k for k, v in PLURALS.items()}
                if entity in plural:
                    members = [i for i, o in enumerate(objs) if o.shape == plural[entity]]
                else:
                    members = [i for i, o in enumerate(objs) if o.colour == entity.removesuffix(" objects")]
                assert members == list(q.objects)
                assert q.answer == ("one", "two", "three", "four", "five")[len(members) - 1]
    assert seen_kinds == {"colour", "shape", "count"}


def test_sample_question_is_seeded():
    scene = make_scene(0, "train", 2, SIZE)
    a = [sample_question(scene, np.random.default_rng(k)) for k in range(10)]
    b = [sample_question(scene, np.random.default_rng(k)) for k in range(10)]
    assert a == b
    assert all(q in scene_questions(scene) for q in a)


def test_canonical_caption_names_every_object_left_to_right():
    for index in range(10):
        scene = make_scene(1, "test", index, SIZE)
        caption = canonical_caption(scene)
        assert sorted(i for *_, i in caption.phrases) == list(range(len(scene.objects)))
        centres = [(scene.objects[i].box[0] + scene.objects[i].box[2]) / 2 for *_, i in caption.phrases]
        assert centres == sorted(centres)
        for (text, (beg, end), i), box in zip(caption.phrases, caption.boxes):
            obj = scene.objects[i]
            assert (
                caption.text[beg:end]
                == text
                == f"{'an' if obj.colour == 'orange' else 'a'} {obj.colour} {obj.shape}"
            )
            assert box == obj.box


def test_dataset_is_deterministic_and_seed_dependent():
    a = SyntheticVL("vqa", 6, seed=5, size=SIZE, questions_per_image=2)
    b = SyntheticVL("vqa", 6, seed=5, size=SIZE, questions_per_image=2)
    c = SyntheticVL("vqa", 6, seed=6, size=SIZE, questions_per_image=2)
    assert len(a) == 12
    for k in range(len(a)):
        x, y = a[k], b[k]
        assert x.question == y.question and x.answer == y.answer
        assert torch.equal(x.sample.image, y.sample.image)
    assert [a[k].question for k in range(12)] != [c[k].question for k in range(12)]
    assert not torch.equal(a[0].sample.image, c[0].sample.image)


def test_vqa_sample_grounds_the_entity_tokens():
    data = SyntheticVL("vqa", 8, seed=0, size=SIZE)
    tokenizer = get_tokenizer()
    for k in range(len(data)):
        item = data[k]
        q = item.question
        target = item.sample.target
        assert item.sample.caption == q.text and item.answer == q.answer
        assert target.boxes.tolist() == [list(map(float, b)) for b in q.boxes]  # same frame: no resize
        encoding = tokenizer(q.text, return_offsets_mapping=True)
        expected = {
            t
            for t, (s, e) in enumerate(encoding["offset_mapping"])
            if e > s and s >= q.entity[0] and e <= q.entity[1]
        }
        for row in target.token_map:
            assert set(torch.nonzero(row).flatten().tolist()) == expected


def test_caption_and_detection_samples():
    cap = SyntheticVL("caption", 4, seed=2, size=SIZE)
    det = SyntheticVL("detection", 4, seed=2, size=SIZE)
    names = detection_names("shape")
    for k in range(4):
        c, d = cap[k], det[k]
        scene = cap.scene(k)
        assert c.sample.caption == c.caption.text
        assert len(c.sample.target.boxes) == len(scene.objects) == len(d.sample.target.boxes)
        assert d.sample.caption == ". ".join(names)
        labels = d.sample.target.labels.tolist()
        assert [names[label - 1] for label in labels] == [o.shape for o in scene.objects]
        assert torch.equal(c.sample.image, d.sample.image)  # aligned: item k is image k for every task


def test_for_task_shares_the_scenes_and_gives_the_items_of_a_separate_dataset():
    det = SyntheticVL("detection", 3, seed=4, size=SIZE)
    vqa, cap = det.for_task("vqa", questions_per_image=2), det.for_task("caption")
    for k in range(3):
        assert cap.scene(k) is det.scene(k)  # drawn once for the three tasks
    for shared, task, per_image in ((vqa, "vqa", 2), (cap, "caption", 1)):
        alone = SyntheticVL(task, 3, seed=4, size=SIZE, questions_per_image=per_image)
        assert len(shared) == len(alone) == 3 * per_image
        for k in range(len(alone)):
            a, b = shared[k], alone[k]
            assert (a.answer, a.kind, a.sample.caption) == (b.answer, b.kind, b.sample.caption)
            assert torch.equal(a.sample.image, b.sample.image)
            assert torch.equal(a.sample.target.boxes, b.sample.target.boxes)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="task"):
        SyntheticVL("segmentation", 2)
    with pytest.raises(ValueError, match="split"):
        SyntheticVL("vqa", 2, split="task_A")
    with pytest.raises(ValueError, match="vocabulary"):
        detection_names("colours")
    with pytest.raises(IndexError):
        SyntheticVL("vqa", 2, size=SIZE)[2]
