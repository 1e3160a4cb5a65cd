"""ATSS target assignment with the official GLIP conventions (maskrcnn_benchmark/modeling/rpn/loss.py).

Per level, the 9 anchors whose centres are nearest (L2) to each GT centre are candidates; a candidate is
positive when its IoU ("+1" areas) reaches mean + std (unbiased) of the candidates' IoUs and its centre
lies inside the GT (min distance to a side > 0.01). An anchor claimed by several GTs takes the one with
the highest IoU (the first on exact ties).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from glip.box_coder import TO_REMOVE, BoxCoder

INF = 100000000  # official rpn/loss.py INF


def box_iou_legacy(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU with "+1" areas (official structures/boxlist_ops.py boxlist_iou). (N, 4), (M, 4) -> (N, M)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0] + TO_REMOVE) * (boxes1[:, 3] - boxes1[:, 1] + TO_REMOVE)
    area2 = (boxes2[:, 2] - boxes2[:, 0] + TO_REMOVE) * (boxes2[:, 3] - boxes2[:, 1] + TO_REMOVE)
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = (rb - lt + TO_REMOVE).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2 - inter)


@dataclass
class Assignment:
    """ATSS result for one image over all anchors (levels concatenated, official order).

    labels: (A,) GT label of each anchor, 0 = negative; matched_gt: (A,) GT index, -1 for negatives;
    reg_targets: (A, 4) encoded deltas of the matched GT (negatives encode GT 0, unused);
    token_targets: (A, T) binary token targets (negatives: only the official disabled "[NoObj]" column).
    """

    labels: torch.Tensor
    matched_gt: torch.Tensor
    reg_targets: torch.Tensor
    token_targets: torch.Tensor | None

    @property
    def positive(self) -> torch.Tensor:
        return self.labels > 0


def atss_assign(
    anchors: Sequence[torch.Tensor],
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_token_map: torch.Tensor | None = None,
    topk: int = 9,
    box_coder: BoxCoder | None = None,
    no_object_token: int = 255,
) -> Assignment:
    """Assign the anchors of one image.

    anchors: L tensors (A_l, 4) xyxy; gt_boxes: (G, 4) xyxy; gt_labels: (G,) int64 >= 1;
    gt_token_map: (G, T) binary positive map of each GT, or None.
    ``no_object_token``: official negatives get a 1 in token column 255 (the "[NoObj]" token, disabled in
    practice because column 255 is normally padding, masked out of the loss); kept for faithfulness.
    """
    coder = box_coder or BoxCoder()
    all_anchors = torch.cat(list(anchors), dim=0)  # (A, 4)
    num_anchors = all_anchors.shape[0]
    num_gt = gt_boxes.shape[0]
    device = all_anchors.device
    if num_gt == 0:
        width = gt_token_map.shape[1] if gt_token_map is not None else 0
        token_targets = None
        if gt_token_map is not None:
            token_targets = torch.zeros(num_anchors, width, device=device)
            if no_object_token < width:
                token_targets[:, no_object_token] = 1
        return Assignment(
            labels=torch.zeros(num_anchors, dtype=torch.long, device=device),
            matched_gt=torch.full((num_anchors,), -1, dtype=torch.long, device=device),
            reg_targets=torch.zeros(num_anchors, 4, device=device),
            token_targets=token_targets,
        )

    ious = box_iou_legacy(all_anchors, gt_boxes)  # (A, G)
    gt_centers = torch.stack(
        ((gt_boxes[:, 0] + gt_boxes[:, 2]) / 2, (gt_boxes[:, 1] + gt_boxes[:, 3]) / 2), dim=1
    )
    anchor_cx = (all_anchors[:, 0] + all_anchors[:, 2]) / 2
    anchor_cy = (all_anchors[:, 1] + all_anchors[:, 3]) / 2
    anchor_centers = torch.stack((anchor_cx, anchor_cy), dim=1)
    distances = (anchor_centers[:, None, :] - gt_centers[None, :, :]).pow(2).sum(-1).sqrt()  # (A, G)

    candidates = []
    start = 0
    for level_anchors in anchors:
        end = start + level_anchors.shape[0]
        k = min(topk, level_anchors.shape[0])
        _, nearest = distances[start:end].topk(k, dim=0, largest=False)  # (k, G)
        candidates.append(nearest + start)
        start = end
    candidate_idxs = torch.cat(candidates, dim=0)  # (K, G)

    gt_range = torch.arange(num_gt, device=device)
    candidate_ious = ious[candidate_idxs, gt_range]  # (K, G)
    threshold = candidate_ious.mean(0) + candidate_ious.std(0)
    is_pos = candidate_ious >= threshold[None, :]

    cand_cx = anchor_cx[candidate_idxs]  # (K, G)
    cand_cy = anchor_cy[candidate_idxs]
    inside = (
        torch.stack(
            (
                cand_cx - gt_boxes[:, 0],
                cand_cy - gt_boxes[:, 1],
                gt_boxes[:, 2] - cand_cx,
                gt_boxes[:, 3] - cand_cy,
            ),
            dim=1,
        )
        .min(dim=1)
        .values
        > 0.01
    )
    is_pos = is_pos & inside

    # an anchor claimed by several GTs keeps the highest IoU (max picks the first on exact ties)
    claimed = torch.full((num_gt, num_anchors), -INF, dtype=ious.dtype, device=device)
    gt_index = gt_range[None, :].expand_as(candidate_idxs)
    claimed[gt_index[is_pos], candidate_idxs[is_pos]] = ious.t()[gt_index[is_pos], candidate_idxs[is_pos]]
    best_value, best_gt = claimed.t().max(dim=1)  # (A,)
    negative = best_value == -INF

    labels = gt_labels[best_gt].clone()
    labels[negative] = 0
    matched = best_gt.clone()
    matched[negative] = -1
    token_targets = None
    if gt_token_map is not None:
        token_targets = gt_token_map[best_gt].clone().float()
        unmatched = torch.zeros(gt_token_map.shape[1], device=device)
        if no_object_token < gt_token_map.shape[1]:
            unmatched[no_object_token] = 1
        token_targets[negative] = unmatched
    reg_targets = coder.encode(gt_boxes[best_gt], all_anchors)
    return Assignment(labels=labels, matched_gt=matched, reg_targets=reg_targets, token_targets=token_targets)


def centerness_targets(
    reg_targets: torch.Tensor, anchors: torch.Tensor, box_coder: BoxCoder | None = None
) -> torch.Tensor:
    """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) from anchor centres. (P, 4), (P, 4) -> (P,)."""
    coder = box_coder or BoxCoder()
    gts = coder.decode(reg_targets, anchors)
    cx = (anchors[:, 2] + anchors[:, 0]) / 2
    cy = (anchors[:, 3] + anchors[:, 1]) / 2
    left_right = torch.stack((cx - gts[:, 0], gts[:, 2] - cx), dim=1)
    top_bottom = torch.stack((cy - gts[:, 1], gts[:, 3] - cy), dim=1)
    ratio = (left_right.min(dim=1).values / left_right.max(dim=1).values) * (
        top_bottom.min(dim=1).values / top_bottom.max(dim=1).values
    )
    return torch.sqrt(ratio)
