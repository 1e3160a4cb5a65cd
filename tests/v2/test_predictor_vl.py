"""GLIPv2 through the public predictor: ask / caption results, heads saved beside a model and loaded by
from_pretrained around the same model, masks through to_supervision, and the errors a user meets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from glip.data.synthetic.vl import ANSWERS
from glip.data.toy import deterministic_tiny_random
from glip.models.captioning import GLIPForCaptioning, load_caption_head
from glip.models.glip import build_model
from glip.models.mask_head import MaskHead, MaskHeadConfig, save_mask_head
from glip.models.vqa import GLIPForVQA, load_vqa_head
from glip.predictor import Answer, Caption, GLIPPredictor
from glip.text.tokenizer import PromptError
from glip.v2.heads import load_vl_heads, save_vl_heads
from glip.weights.loading import save_model


@pytest.fixture(scope="module")
def v2_dir(tmp_path_factory):
    """A tiny random GLIPv2 model saved with all three heads (as the bundled demo_v2 is)."""
    torch.manual_seed(0)
    config = deterministic_tiny_random()
    glip = build_model(config).eval()
    glip.head.bias0.data.fill_(0.0)  # so a random model shows boxes
    vqa, captioner = GLIPForVQA(glip, ANSWERS), GLIPForCaptioning(glip)
    directory = tmp_path_factory.mktemp("v2model")
    save_model(glip, directory)
    save_mask_head(MaskHead(MaskHeadConfig.for_model(config)), directory, half=True)
    save_vl_heads(directory, vqa=vqa, captioner=captioner, half=True)
    return directory


@pytest.fixture(scope="module")
def predictor(v2_dir):
    return GLIPPredictor.from_pretrained(str(v2_dir), device="cpu")


def shapes_image(size: int = 128) -> Image.Image:
    pixels = np.full((size, size, 3), 235, dtype=np.uint8)
    pixels[20:60, 20:60] = (220, 30, 30)
    pixels[70:110, 60:110] = (30, 40, 220)
    return Image.fromarray(pixels)


def test_from_pretrained_loads_every_head_around_the_same_model(predictor):
    assert predictor.mask_head is not None
    assert predictor.vqa is not None and predictor.vqa.glip is predictor.model
    assert predictor.captioner is not None and predictor.captioner.glip is predictor.model
    assert predictor.vqa.answers == tuple(ANSWERS)


def test_heads_round_trip_through_their_files(v2_dir):
    glip = build_model(deterministic_tiny_random())
    vqa, captioner = load_vl_heads(v2_dir, glip)
    saved = json.loads((v2_dir / "vqa_head.json").read_text())
    assert saved["answers"] == list(ANSWERS)
    assert all(p.dtype == torch.float32 for p in vqa.head.parameters())  # fp16 file, fp32 module
    assert load_vqa_head(v2_dir.parent, glip) is None and load_caption_head(v2_dir.parent, glip) is None
    assert captioner.glip is glip


def test_caption_head_for_another_vocabulary_is_refused(v2_dir, tmp_path):
    meta = json.loads((v2_dir / "caption_head.json").read_text())
    for name in ("caption_head.json", "caption_head.safetensors"):
        (tmp_path / name).write_bytes((v2_dir / name).read_bytes())
    (tmp_path / "caption_head.json").write_text(json.dumps({**meta, "vocab_size": meta["vocab_size"] + 1}))
    with pytest.raises(ValueError, match="vocabulary"):
        load_caption_head(tmp_path, build_model(deterministic_tiny_random()))


@pytest.mark.parametrize("name", ["vqa_head", "caption_head"])
def test_heads_of_another_format_or_model_are_refused(v2_dir, tmp_path, name):
    meta = json.loads((v2_dir / f"{name}.json").read_text())
    for suffix in (".json", ".safetensors"):
        (tmp_path / f"{name}{suffix}").write_bytes((v2_dir / f"{name}{suffix}").read_bytes())
    load = load_vqa_head if name == "vqa_head" else load_caption_head
    glip = build_model(deterministic_tiny_random())
    old = {k: v for k, v in meta.items() if k not in ("format", "feature_dim", "fpn_dim", "num_levels")}
    (tmp_path / f"{name}.json").write_text(json.dumps(old))  # a head saved before it read the image
    with pytest.raises(ValueError, match="older format.*retrain"):
        load(tmp_path, glip)
    (tmp_path / f"{name}.json").write_text(json.dumps({**meta, "feature_dim": meta["feature_dim"] + 1}))
    with pytest.raises(ValueError, match="channels"):
        load(tmp_path, glip)


def test_ask_returns_an_answer_with_entity_boxes_in_image_pixels(predictor):
    image = shapes_image()
    answer = predictor.ask(image, "what colour is the square?", threshold=0.0, entities=["the square"])
    assert isinstance(answer, Answer) and answer.answer in ANSWERS and 0.0 <= answer.score <= 1.0
    boxes = answer.entities
    assert len(boxes) > 0 and set(boxes.phrases) == {"the square"}
    assert boxes.image_size == (128, 128)
    assert float(boxes.boxes.min()) >= 0 and float(boxes.boxes.max()) <= 128
    assert torch.all(boxes.scores[:-1] >= boxes.scores[1:])  # best first
    record = answer.to_dict()
    assert record["question"] == "what colour is the square?" and record["answer"] == answer.answer
    assert len(record["detections"]) == len(boxes)
    # a list of images gives a list; the same image gives the same answer
    both = predictor.ask([image, image], "what colour is the square?", threshold=0.0, entities=["the square"])
    assert [a.answer for a in both] == [answer.answer] * 2
    assert torch.equal(both[1].entities.boxes, boxes.boxes)


def test_question_entities_leave_out_what_the_question_asks_about(predictor):
    pytest.importorskip("spacy")
    try:
        entities = predictor.question_entities("what colour is the circle?")
    except PromptError:
        pytest.skip("the spaCy model is not installed")
    assert entities == ["the circle"]
    assert predictor.question_entities("how many red stars are there?") == ["red stars"]


def test_caption_greedy_and_beam_words_have_boxes_in_image_pixels(predictor):
    image = shapes_image(96)
    caption = predictor.caption(image, max_length=5)
    assert isinstance(caption, Caption) and caption.image_size == (96, 96)
    assert 1 <= len(caption.words) <= 5
    for word in caption.grounded():
        assert len(word.box) == 4 and all(-1 <= v <= 97 for v in word.box)
    beam = predictor.caption(image, beams=2, max_length=4)
    assert isinstance(beam.text, str) and len(beam.words) <= 4
    assert caption.to_dict()["caption"] == caption.text


def test_bad_vl_inputs_are_clear_errors(predictor, v2_dir):
    image = shapes_image(64)
    with pytest.raises(PromptError, match="empty"):
        predictor.ask(image, "   ")
    with pytest.raises(PromptError):
        predictor.ask(image, "what " * 400, entities=["what"])
    with pytest.raises(ValueError, match="threshold"):
        predictor.ask(image, "what colour is the square?", threshold=float("nan"), entities=["the square"])
    with pytest.raises(ValueError, match="beams"):
        predictor.caption(image, beams=0)
    with pytest.raises(ValueError, match="max_length"):
        predictor.caption(image, max_length=10_000)
    plain = GLIPPredictor(predictor.model)
    with pytest.raises(ValueError, match="no VQA head"):
        plain.ask(image, "what colour is the square?")
    with pytest.raises(ValueError, match="no captioning head"):
        plain.caption(image)
    other = build_model(deterministic_tiny_random())
    with pytest.raises(ValueError, match="shares every weight"):
        GLIPPredictor(predictor.model, vqa=GLIPForVQA(other, ANSWERS))


def test_masks_reach_supervision(predictor):
    sv = pytest.importorskip("supervision")
    result = predictor.predict(
        shapes_image(96), classes=["red square", "blue square"], threshold=0.0, masks=True
    )
    assert result.masks is not None and result.masks.shape == (len(result), 96, 96)
    detections = result.to_supervision()
    assert isinstance(detections, sv.Detections)
    assert detections.mask is not None and detections.mask.shape == (len(result), 96, 96)
    assert detections.mask.dtype == bool


def test_save_pretrained_keeps_the_vl_heads(predictor, tmp_path):
    from glip.weights.hub import HEAD_FILES
    from glip.weights.publish import save_pretrained

    out = save_pretrained(predictor, tmp_path / "published", repo_id="me/shapes-v2")
    for files in HEAD_FILES.values():
        assert all((out / name).is_file() for name in files)
    card = (out / "README.md").read_text()
    assert "grounded VQA" in card and "grounded captioning" in card and "instance masks" in card
    again = GLIPPredictor.from_pretrained(str(out), device="cpu")
    assert again.vqa is not None and again.captioner is not None and again.mask_head is not None
    image = shapes_image(64)
    first = predictor.ask(image, "what colour is the square?", entities=["the square"])
    second = again.ask(image, "what colour is the square?", entities=["the square"])
    assert (first.answer, round(first.score, 5)) == (second.answer, round(second.score, 5))


def test_masks_only_for_the_detections_kept(predictor, monkeypatch):
    """The mask head runs on the detections above the threshold only (not the ~100 of post-processing), and
    their masks are the ones computed with every detection."""
    from glip.models import mask_head as mask_module

    seen: list[int] = []
    original = mask_module.detection_masks

    def counting(head, features, fused, boxes, *rest, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(sum(len(b) for b in boxes))
        return original(head, features, fused, boxes, *rest, **kwargs)

    monkeypatch.setattr(mask_module, "detection_masks", counting)
    image, classes = shapes_image(96), ["red square", "blue square"]
    every = predictor.predict(image, classes=classes, threshold=0.0, masks=True)
    threshold = float(every.scores[len(every) // 2])
    kept = predictor.predict(image, classes=classes, threshold=threshold, masks=True)
    assert seen == [len(every), len(kept)] and 0 < len(kept) < len(every)
    assert kept.masks is not None and every.masks is not None
    assert torch.equal(kept.masks, every.masks[: len(kept)])
