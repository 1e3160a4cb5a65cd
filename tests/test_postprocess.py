"""Post-processing: legacy "+1" NMS, phrase = mean of its tokens, thresholds and the top-k cut."""

from __future__ import annotations

import torch

from glip.box_coder import BoxCoder
from glip.postprocess import PhrasePlan, nms_legacy, phrase_scores, phrase_scores_loop, postprocess_image


def test_nms_uses_plus_one_areas():
    # Standard IoU of these boxes is exactly 12/20 = 0.6 (kept); with "+1" areas it is 20/30 = 0.667 (suppressed).
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 0.0, 5.0, 4.0]])
    scores = torch.tensor([0.9, 0.8])
    same_label = torch.tensor([1, 1])
    assert nms_legacy(boxes, scores, same_label, 0.6).tolist() == [0]
    # class-aware: different labels never suppress each other
    assert nms_legacy(boxes, scores, torch.tensor([1, 2]), 0.6).tolist() == [0, 1]
    # below the threshold both stay, sorted by score
    assert nms_legacy(boxes, torch.tensor([0.1, 0.8]), same_label, 0.7).tolist() == [1, 0]


def test_phrase_score_is_mean_of_token_probabilities():
    probs = torch.tensor([[0.1, 0.2, 0.6, 0.9, 0.3], [0.5, 0.5, 0.5, 0.5, 0.5]])
    scores, labels = phrase_scores(probs, {2: [2, 3], 1: [1], 3: []})
    assert labels.tolist() == [1, 2]  # label 3 has no tokens: no column
    torch.testing.assert_close(scores, torch.tensor([[0.2, 0.75], [0.5, 0.5]]))


def test_phrase_scores_are_the_bits_of_the_per_label_loop():
    """The vectorised form (one gather + mean per token count) equals the official loop bit for bit, for
    labels of 1 to 30 tokens, repeated and unordered positions, labels without tokens, strided input."""
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(300, 500, generator=generator).t()  # (A, T) = (500, 300), not contiguous
    label_to_tokens = {}
    for label in range(1, 120):
        count = int(torch.randint(1, 31, (1,), generator=generator))
        label_to_tokens[label] = torch.randint(0, 300, (count,), generator=generator).tolist()
    label_to_tokens[7] = []
    label_to_tokens[200] = [5, 5, 3]
    scores, labels = phrase_scores(probs, label_to_tokens)
    expected, expected_labels = phrase_scores_loop(probs, label_to_tokens)
    assert torch.equal(labels, expected_labels)
    assert torch.equal(scores, expected)
    # a plan built once gives the same, and one token count only (a single gather) too
    assert torch.equal(phrase_scores(probs, PhrasePlan(label_to_tokens))[0], expected)
    same_length = {1: [3, 4], 2: [9, 1], 5: [0, 0]}
    assert torch.equal(phrase_scores(probs, same_length)[0], phrase_scores_loop(probs, same_length)[0])
    empty, no_labels = phrase_scores(probs, {1: []})
    assert empty.shape == (500, 0) and no_labels.numel() == 0


def test_postprocess_thresholds_and_scores():
    """One level of 2x2 locations; only location 3 passes 0.05 for label 1. Final score sqrt(p * ctr)."""
    logit = lambda p: torch.logit(torch.tensor(p))  # noqa: E731
    token_logits = torch.full((4, 3), -10.0)
    token_logits[3, 1] = logit(0.5)
    token_logits[2, 1] = logit(0.04)  # below the pre-NMS threshold (applied before centerness)
    centerness = torch.full((1, 2, 2), 0.0)  # sigmoid 0.5
    anchors = torch.tensor([[0.0, 0.0, 9.0, 9.0]] * 4)
    detections = postprocess_image(
        [token_logits], [torch.zeros(4, 2, 2)], [centerness], [anchors], (20, 30), {1: [1]}
    )
    assert len(detections) == 1
    assert detections.labels.tolist() == [1]
    torch.testing.assert_close(detections.scores, torch.tensor([0.5]))  # sqrt(0.5 * 0.5)
    assert detections.boxes.tolist() == [[0.0, 0.0, 9.0, 9.0]]


def test_clipping_and_detections_per_image():
    torch.manual_seed(0)
    count = 50
    token_logits = torch.randn(count, 4) + 2
    anchors = torch.stack([torch.tensor([i * 40.0, 0.0, i * 40.0 + 30, 30.0]) for i in range(count)])
    regression = torch.zeros(4, 1, count)
    regression[2] = 10.0  # very wide boxes, then clipped to the image
    detections = postprocess_image(
        [token_logits],
        [regression],
        [torch.zeros(1, 1, count)],
        [anchors],
        (40, 500),
        {1: [1], 2: [2, 3]},
        detections_per_img=7,
        nms_thresh=1.0,
        box_coder=BoxCoder(),
    )
    assert len(detections) == 7
    assert detections.boxes[:, 0::2].min() >= 0 and detections.boxes[:, 2].max() <= 499
    assert detections.boxes[:, 3].max() <= 39
