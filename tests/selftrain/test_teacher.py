"""The teacher: prompts from noun phrases, threshold / NMS / cap semantics, batching."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.ops import box_iou

from glip.data.reading import read_image
from glip.selftrain.teacher import Teacher, TeacherConfig
from glip.text.tokenizer import PromptError

from .conftest import small_random_model


@pytest.fixture(scope="module")
def model():
    return small_random_model()


def _pairs(corpus, count=4):
    lines = (corpus / "captions.jsonl").read_text().splitlines()[:count]
    records = [json.loads(line) for line in lines]
    return [read_image(corpus / "images" / r["image"]) for r in records], [r["caption"] for r in records]


def test_prompt_spans_slice_back_to_the_phrases(model):
    teacher = Teacher(model)
    caption = "A red circle left of a blue square, and a red circle again."
    prompt = teacher.prompt(caption)
    assert [p.lower() for p in prompt.phrases][:2] == ["a red circle", "a blue square"]
    for phrase, spans in zip(prompt.phrases, prompt.spans):
        assert caption[spans[0][0] : spans[0][1]] == phrase
        for beg, end in spans:
            assert 0 <= beg < end <= len(caption) and caption[beg:end].lower() == phrase.lower()
    assert len(prompt.spans[0]) == 2  # "A red circle" and "a red circle": both occurrences
    assert sorted(prompt.label_to_tokens) == list(range(1, len(prompt.phrases) + 1))
    limited = Teacher(model, TeacherConfig(max_phrases=1)).prompt(caption)
    assert limited.phrases == prompt.phrases[:1]


def test_bad_captions_raise_prompt_errors(model):
    teacher = Teacher(model)
    with pytest.raises(PromptError, match="no noun phrase"):
        teacher.prompt("quickly, very quickly!")
    with pytest.raises(PromptError, match="tokens"):
        teacher.prompt("a red circle " * 200)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"threshold": 1.0}, "threshold"),
        ({"max_phrases": 0}, "max_phrases"),
        ({"max_boxes_per_phrase": 0}, "max_boxes_per_phrase"),
        ({"nms_iou": 0.0}, "nms_iou"),
    ],
)
def test_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TeacherConfig(**kwargs)


def test_raising_the_threshold_never_adds_boxes(model, corpus):
    images, captions = _pairs(corpus)
    teacher = Teacher(model)
    prompts = [teacher.prompt(c) for c in captions]
    kept = {}
    for threshold in (0.3, 0.5, 0.52, 0.55):
        teacher.config = TeacherConfig(threshold=threshold, max_boxes_per_phrase=3, nms_iou=0.5)
        kept[threshold] = teacher.label(images, prompts)
    assert sum(len(p.boxes) for out in kept[0.3] for p in out.phrases) > 0
    for low, high in zip((0.3, 0.5, 0.52), (0.5, 0.52, 0.55)):
        for out_low, out_high in zip(kept[low], kept[high]):
            low_boxes = {(p.phrase, tuple(b)) for p in out_low.phrases for b in p.boxes.tolist()}
            high_boxes = {(p.phrase, tuple(b)) for p in out_high.phrases for b in p.boxes.tolist()}
            assert high_boxes <= low_boxes
            assert torch.equal(out_low.candidate_scores, out_high.candidate_scores)
    for outputs in kept.values():
        for out, prompt in zip(outputs, prompts):
            for phrase_boxes in out.phrases:
                assert phrase_boxes.phrase in prompt.phrases
                assert 1 <= len(phrase_boxes.boxes) <= 3  # the cap
                assert bool((phrase_boxes.scores[:-1] >= phrase_boxes.scores[1:]).all())
                iou = box_iou(phrase_boxes.boxes, phrase_boxes.boxes).fill_diagonal_(0)
                assert float(iou.max()) <= 0.5 + 1e-6  # per-phrase NMS
    for out in kept[0.55]:
        assert all(bool((p.scores > 0.55).all()) for p in out.phrases)


def test_batches_give_the_single_pair_results(model, corpus):
    images, captions = _pairs(corpus)
    teacher = Teacher(model, TeacherConfig(threshold=0.3))
    prompts = [teacher.prompt(c) for c in captions]
    one = teacher.label(images, prompts, batch_size=1)
    many = teacher.label(images, prompts, batch_size=3)
    for a, b in zip(one, many):
        assert [p.phrase for p in a.phrases] == [p.phrase for p in b.phrases]
        for pa, pb in zip(a.phrases, b.phrases):
            torch.testing.assert_close(pa.boxes, pb.boxes, atol=1e-3, rtol=0)
            torch.testing.assert_close(pa.scores, pb.scores, atol=1e-5, rtol=0)
    width, height = images[0].size
    boxes = torch.cat([p.boxes for p in one[0].phrases])
    assert float(boxes[:, 2].max()) <= width and float(boxes[:, 3].max()) <= height  # original pixels
