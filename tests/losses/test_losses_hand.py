"""ATSS assignment, target expansion and each loss on cases small enough to compute by hand."""

from __future__ import annotations

import math

import torch

from glip.box_coder import BoxCoder
from glip.losses.atss import atss_assign, box_iou_legacy, centerness_targets
from glip.losses.grounding import giou_loss, token_sigmoid_focal_loss


def test_legacy_iou():
    a = torch.tensor([[0.0, 0.0, 9.0, 9.0]])
    b = torch.tensor([[5.0, 0.0, 14.0, 9.0], [20.0, 20.0, 29.0, 29.0]])
    # widths with "+1": 10 each; overlap x 5..9 = 5 px -> 50 / (100 + 100 - 50)
    torch.testing.assert_close(box_iou_legacy(a, b), torch.tensor([[50 / 150, 0.0]]))


def test_atss_picks_anchors_near_the_centre_and_expands_tokens():
    # one level, a 4x4 grid of 8x8 anchors with stride 8 (centres at 3.5 + 8k)
    centres = torch.arange(4, dtype=torch.float32) * 8 + 3.5
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    anchors = torch.stack([cx - 3.5, cy - 3.5, cx + 3.5, cy + 3.5], dim=-1).reshape(-1, 4)
    gt = torch.tensor([[0.0, 0.0, 15.0, 15.0]])  # covers exactly the four top-left anchors
    token_map = torch.tensor([[0, 1, 1, 0, 0, 0]], dtype=torch.float32)  # the phrase is tokens 1 and 2
    result = atss_assign([anchors], gt, torch.tensor([3]), token_map, topk=4, no_object_token=5)
    # the 4 nearest anchors have IoU 64/256 = 0.25 each: mean + std = 0.25, all >= threshold and inside
    expected = torch.zeros(16, dtype=torch.long)
    expected[[0, 1, 4, 5]] = 3
    assert torch.equal(result.labels, expected)
    assert result.matched_gt[0] == 0 and result.matched_gt[2] == -1
    # positives get every sub-word of the phrase; negatives only the disabled "[NoObj]" column
    assert result.token_targets[0].tolist() == [0, 1, 1, 0, 0, 0]
    assert result.token_targets[15].tolist() == [0, 0, 0, 0, 0, 1]


def test_atss_highest_iou_wins_and_centre_must_be_inside():
    anchors = torch.tensor(
        [[0.0, 0.0, 9.0, 9.0], [10.0, 0.0, 19.0, 9.0], [40.0, 40.0, 49.0, 49.0], [100.0, 100.0, 109.0, 109.0]]
    )
    # gt0 IoUs (1, 0, 0, 0): mean .25 + std .5 -> anchor 0. gt1 IoUs (.833, .1, 0, 0): threshold .636 ->
    # anchor 0 too. Anchor 0 is claimed twice and keeps gt0 (IoU 1 > .833).
    # gt2 IoUs all 0 -> threshold 0, every candidate passes it, but no candidate centre lies inside gt2.
    gts = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 11.0, 9.0], [60.0, 60.0, 70.0, 70.0]])
    result = atss_assign([anchors], gts, torch.tensor([1, 2, 3]), None, topk=4)
    assert result.matched_gt.tolist() == [0, -1, -1, -1]
    assert result.labels.tolist() == [1, 0, 0, 0]
    swapped = atss_assign([anchors], gts[[1, 0, 2]], torch.tensor([2, 1, 3]), None, topk=4)
    assert swapped.matched_gt.tolist() == [1, -1, -1, -1]
    assert result.token_targets is None


def test_focal_loss_by_hand():
    logits = torch.tensor([[[0.0, 2.0, 5.0]]])  # (B=1, A=1, T=3)
    targets = torch.tensor([[[1.0, 0.0, 1.0]]])
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding: ignored
    p0, p1 = 0.5, 1 / (1 + math.exp(-2.0))
    positive = 0.25 * -math.log(p0) * (1 - p0) ** 2
    negative = 0.75 * -math.log(1 - p1) * p1**2
    value = token_sigmoid_focal_loss(logits, targets, mask)
    assert abs(value.item() - (positive + negative)) < 1e-5


def test_giou_and_centerness_by_hand():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 9.0, 9.0]])
    target = coder.encode(torch.tensor([[0.0, 0.0, 9.0, 9.0]]), anchors)
    # a perfect prediction has GIoU 1, loss 0; the centre of a centred box has centerness 1
    assert giou_loss(target, target, anchors).item() < 1e-6
    assert abs(centerness_targets(target, anchors).item() - 1.0) < 1e-6
    # prediction shifted right by 10 px (dx = 10 * 10 / 10): no overlap, enclosing 20x10 -> GIoU = 0 - (200-180)/200
    shifted = target.clone()
    shifted[0, 0] = 10.0
    enclosing = 19.0 * 9.0  # areas without "+1": boxes are 9 wide
    expected = 1 - (0.0 - (enclosing - (81 + 81)) / enclosing)
    assert abs(giou_loss(shifted, target, anchors).item() - expected) < 1e-4
    # off-centre anchor: l = 2, r = 7 (box 0..9 around centre x 2, decoded back from the targets)
    off = torch.tensor([[-2.5, 0.0, 6.5, 9.0]])  # centre (2, 4.5)
    gt = coder.encode(torch.tensor([[0.0, 0.0, 9.0, 9.0]]), off)
    assert abs(centerness_targets(gt, off).item() - math.sqrt(2 / 7)) < 1e-5
