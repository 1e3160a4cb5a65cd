"""Phrase identities for category propagation, and how the datasets fill them into Target."""

from __future__ import annotations

import json

import torch

from glip.data.coco import CocoGroundingDataset
from glip.data.mdetr import MDETRDataset
from glip.data.toy import write_toy_coco
from glip.data.transforms import TrainTransform
from glip.text.phrases import NO_PHRASE, normalize_phrase, phrase_id, token_phrase_ids
from glip.text.tokenizer import get_tokenizer


def test_normalisation_and_stable_ids():
    assert normalize_phrase("The  Red-Circle.") == "red circle"
    assert normalize_phrase("a") == "a"  # a lone article stays a word
    assert phrase_id("A red circle") == phrase_id("red circle") == phrase_id("the RED circle!")
    assert phrase_id("two red circles") != phrase_id("red circle")
    assert phrase_id("...") == NO_PHRASE
    assert 0 <= phrase_id("red circle") < 2**63
    # the same in every process and run (blake2b, not Python's salted hash)
    assert phrase_id("red circle") == 2946446551055536404


def test_token_ids_later_maps_win():
    first = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 1]])
    second = torch.tensor([[0, 0, 1, 0]])
    out = token_phrase_ids([first, second], [torch.tensor([5, 6]), torch.tensor([7])])
    assert out.tolist() == [NO_PHRASE, 5, 7, 6]


def _tokens(caption: str) -> list[str]:
    return get_tokenizer().convert_ids_to_tokens(get_tokenizer()(caption)["input_ids"])


def test_detection_prompts_label_every_class_name(tmp_path):
    ann = write_toy_coco(tmp_path, 2, size=64)
    data = json.loads(ann.read_text())
    data["categories"].append({"id": 3, "name": "left green star"})  # a class with no box, with "left"
    transform = TrainTransform((64,), 64, flip_prob=1.0, seed=0)  # always flipped: "left" -> "right"
    dataset = CocoGroundingDataset(data, tmp_path / "images", transform, num_negatives=-1)
    sample = dataset[0]
    assert "right green star" in sample.caption
    target = sample.target
    assert torch.equal(target.phrase_ids, torch.tensor([phrase_id("red square"), phrase_id("blue circle")]))
    words = _tokens(sample.caption)
    by_word = {}
    for word, value in zip(words, target.token_phrase_ids[: len(words)].tolist()):
        by_word.setdefault(value, []).append(word)
    assert by_word[phrase_id("red square")] == ["red", "square"]
    assert by_word[phrase_id("blue circle")] == ["blue", "circle"]
    # the negative class (no box) is labelled too, at its moved span; its identity is the caption's text
    assert by_word[phrase_id("right green star")] == ["right", "green", "star"]
    assert sorted(by_word[NO_PHRASE]) == sorted(["[CLS]", "[SEP]", ".", "."])


def test_grounding_captions_label_the_annotated_phrases(tmp_path):
    write_toy_coco(tmp_path, 1, size=64)
    caption = "The red square next to a blue circle."
    data = {
        "images": [{"id": 1, "file_name": "scene_0000.png", "width": 64, "height": 64, "caption": caption}],
        "annotations": [
            {"id": i, "image_id": 1, "bbox": box, "tokens_positive": [span], "category_id": 1}
            for i, (box, span) in enumerate([([1, 1, 20, 20], [0, 14]), ([30, 30, 20, 20], [23, 36])], 1)
        ],
    }
    sample = MDETRDataset(data, tmp_path / "images", TrainTransform((64,), 64, flip_prob=0.0))[0]
    assert sample.target.phrase_ids.tolist() == [phrase_id("red square"), phrase_id("blue circle")]
    words = _tokens(caption)
    labelled = [w for w, v in zip(words, sample.target.token_phrase_ids.tolist()) if v != NO_PHRASE]
    assert labelled == ["the", "red", "square", "a", "blue", "circle"]
