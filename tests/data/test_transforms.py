"""Joint transforms: resize, legacy flip, "left" <-> "right" with span remapping, clipping, EXIF."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from glip.data import EvalTransform, GroundingRecord, TrainTransform, make_sample, read_image, swap_left_right
from glip.data.boxes import clip_legacy, clip_to_frame, flip_boxes_legacy, xywh_to_legacy_xyxy
from glip.data.captions import CharMap
from glip.preprocess import preprocess


def _record(caption="a dog", spans=((0, 5),), boxes=((10.0, 20.0, 49.0, 39.0),), size=(100, 60), seed=0):
    array = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return GroundingRecord(
        image=Image.fromarray(array),
        boxes=boxes_t,
        labels=torch.arange(1, len(boxes_t) + 1),
        tokens_positive=[[tuple(s)] for s in spans][: len(boxes_t)],
        caption=caption,
        image_id="test",
    )


def test_flip_legacy_convention_and_image():
    record = _record()
    flipped = TrainTransform(min_sizes=(60,), max_size=1000, flip_prob=1.0)(record)
    plain = EvalTransform(60, 1000)(record)
    assert flipped.extra["flipped"] and not plain.extra["flipped"]
    # size unchanged (shorter side is already 60): x1' = W - x2 - 1, x2' = W - x1 - 1 with W = 100
    assert flipped.boxes.tolist() == [[100 - 49 - 1, 20.0, 100 - 10 - 1, 39.0]]
    torch.testing.assert_close(flipped.image, plain.image.flip(-1))
    assert flip_boxes_legacy(flipped.boxes, 100).tolist() == record.boxes.tolist()  # an involution


def test_eval_transform_is_inference_preprocessing():
    record = _record(size=(90, 70))
    out = EvalTransform(50, 80)(record)
    torch.testing.assert_close(out.image, preprocess(record.image, 50, 80))
    height, width = out.image.shape[-2:]
    assert (height, width) == (50, 64)
    torch.testing.assert_close(
        out.boxes, record.boxes * torch.tensor([64 / 90, 50 / 70, 64 / 90, 50 / 70]), rtol=0, atol=1e-5
    )


def test_left_right_swap_keeps_phrases():
    caption = "the man on the left of the red car"
    phrases = ["the man", "the left", "the red car", "left"]
    spans = [[(caption.index(p), caption.index(p) + len(p))] for p in phrases[:3]]
    spans.append([(caption.index("left"), caption.index("left") + 4)])
    new, new_spans = swap_left_right(caption, spans)
    assert new == "the man on the right of the red car"
    assert [new[s[0][0] : s[0][1]] for s in new_spans] == ["the man", "the right", "the red car", "right"]
    # and back
    back, back_spans = swap_left_right(new, new_spans)
    assert back == caption and back_spans == spans


def test_left_right_swap_words_case_and_multi_spans():
    caption = "Left hand, RIGHT foot; the bright leftover on the right-hand side. Right?"
    spans = [[(0, 9)], [(11, 21)], [(27, 42)], [(50, 65)], [(0, 4), (67, 72)]]
    new, new_spans = swap_left_right(caption, spans)
    assert new == "Right hand, LEFT foot; the bright leftover on the left-hand side. Left?"
    texts = [[new[b:e] for b, e in spans_] for spans_ in new_spans]
    assert texts == [
        ["Right hand"],
        ["LEFT foot"],
        ["bright leftover"],
        ["left-hand side"],
        ["Right", "Left"],
    ]
    assert swap_left_right("no such words", [[(0, 2)]]) == ("no such words", [[(0, 2)]])


def test_char_map_inside_a_replaced_word_snaps_outward():
    mapping = CharMap([(4, 8, 5)])  # "the left x" -> "the right x"
    assert mapping.span((0, 3)) == (0, 3)  # before
    assert mapping.span((4, 8)) == (4, 9)  # exactly the word
    assert mapping.span((5, 7)) == (4, 9)  # inside: whole new word
    assert mapping.span((9, 10)) == (10, 11)  # after: shifted by +1
    assert mapping.span((0, 6)) == (0, 9)


def test_flip_swaps_caption_and_token_map():
    caption = "the man on the left of the red car"
    spans = [(11, 19), (27, 34)]  # "the left", "red car"
    record = _record(caption, spans, boxes=((10, 10, 30, 50), (40, 5, 90, 40)))
    out = TrainTransform(min_sizes=(60,), max_size=1000, flip_prob=1.0)(record)
    assert out.caption == "the man on the right of the red car"
    assert [out.caption[s[0][0] : s[0][1]] for s in out.tokens_positive] == ["the right", "red car"]
    sample = make_sample(out)
    assert sample.target.token_map[0].nonzero().reshape(-1).tolist() == [4, 5]  # "the", "right"
    kept = TrainTransform(min_sizes=(60,), max_size=1000, flip_prob=1.0, swap_left_right=False)(record)
    assert kept.caption == caption  # official behaviour


def test_transform_randomness_is_reproducible():
    record = _record(size=(120, 80))
    transform = TrainTransform(min_sizes=(40, 50, 60, 70), max_size=1000, flip_prob=0.5)
    outs = [transform(record, rng=np.random.default_rng(s)) for s in range(12)]
    again = [transform(record, rng=np.random.default_rng(s)) for s in range(12)]
    assert [tuple(o.image.shape) for o in outs] == [tuple(o.image.shape) for o in again]
    assert [o.extra["flipped"] for o in outs] == [o.extra["flipped"] for o in again]
    assert len({o.image.shape[-2] for o in outs}) > 1 and len({o.extra["flipped"] for o in outs}) == 2
    seeded = [TrainTransform((40, 50, 60), 1000, 0.5, seed=3)(record).image.shape for _ in range(2)]
    assert seeded[0] == TrainTransform((40, 50, 60), 1000, 0.5, seed=3)(record).image.shape


def test_boxes_clipped_and_empty_ones_dropped_with_their_rows():
    legacy = xywh_to_legacy_xyxy(
        torch.tensor([[-5, 10, 20, 20], [50, 50, 1, 10], [95, 0, 30, 30], [120, 5, 5, 5]])
    )
    clipped, keep = clip_legacy(legacy, 100, 60)
    assert keep.tolist() == [True, False, True, False]  # w == 1 and outside boxes have no extent
    assert clipped[0].tolist() == [0, 10, 14, 29] and clipped[2].tolist() == [95, 0, 99, 29]
    frame, keep = clip_to_frame(torch.tensor([[-0.2, 1, 10, 10], [5, 5, 5, 9], [101, 0, 120, 9]]), 100, 60)
    assert keep.tolist() == [True, False, False] and frame[0, 0] == 0
    # a record with boxes outside the image: the transform drops them together with spans and labels
    record = _record("a dog and a cat", [(0, 5), (10, 15)], boxes=((10, 10, 30, 30), (150, 10, 170, 30)))
    out = EvalTransform(60, 1000)(record)
    assert out.labels.tolist() == [1] and out.tokens_positive == [[(0, 5)]]
    sample = make_sample(out)
    assert sample.target.token_map.shape == (1, 256) and sample.target.boxes.shape == (1, 4)


def test_sample_without_boxes_is_valid():
    record = _record("a dog", [], boxes=())
    sample = make_sample(EvalTransform(60, 1000)(record))
    assert sample.target.boxes.shape == (0, 4) and sample.target.token_map.shape == (0, 256)
    assert sample.target.labels.dtype == torch.int64


def test_box_whose_phrase_has_no_token_is_dropped():
    record = _record("a dog      x", [(0, 5), (5, 10)], boxes=((10, 10, 30, 30), (40, 10, 60, 30)))  # blanks
    sample = make_sample(EvalTransform(60, 1000)(record))
    assert sample.target.labels.tolist() == [1]


@pytest.mark.parametrize("exif_transpose", [False, True])
def test_exif_orientation(tmp_path, exif_transpose):
    image = Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8))  # W 40, H 20
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes())
    loaded = read_image(path, exif_transpose=exif_transpose)
    assert loaded.mode == "RGB"
    assert loaded.size == ((20, 40) if exif_transpose else (40, 20))
