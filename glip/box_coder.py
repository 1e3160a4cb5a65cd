"""Box delta encoding/decoding with the official GLIP conventions (rpn/vldyhead.py BoxCoder).

Widths and heights use the legacy "+1" (``w = x2 - x1 + 1``), the weights are (10, 10, 5, 5) and the
log-size deltas are clamped at log(1000 / 16) when decoding.
"""

from __future__ import annotations

import math

import torch

BBOX_XFORM_CLIP = math.log(1000.0 / 16)
TO_REMOVE = 1.0  # legacy "+1" pixel convention


class BoxCoder:
    """Encode GT boxes against anchors and decode regression deltas back to xyxy boxes."""

    def __init__(self, weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)) -> None:
        self.weights = weights

    def encode(self, gt_boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """gt_boxes, anchors: (N, 4) xyxy -> deltas (N, 4) (dx, dy, dw, dh)."""
        ex_w = anchors[:, 2] - anchors[:, 0] + TO_REMOVE
        ex_h = anchors[:, 3] - anchors[:, 1] + TO_REMOVE
        ex_cx = (anchors[:, 2] + anchors[:, 0]) / 2
        ex_cy = (anchors[:, 3] + anchors[:, 1]) / 2
        gt_w = gt_boxes[:, 2] - gt_boxes[:, 0] + TO_REMOVE
        gt_h = gt_boxes[:, 3] - gt_boxes[:, 1] + TO_REMOVE
        gt_cx = (gt_boxes[:, 2] + gt_boxes[:, 0]) / 2
        gt_cy = (gt_boxes[:, 3] + gt_boxes[:, 1]) / 2
        wx, wy, ww, wh = self.weights
        return torch.stack(
            (
                wx * (gt_cx - ex_cx) / ex_w,
                wy * (gt_cy - ex_cy) / ex_h,
                ww * torch.log(gt_w / ex_w),
                wh * torch.log(gt_h / ex_h),
            ),
            dim=1,
        )

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """deltas: (N, 4), anchors: (N, 4) xyxy -> boxes (N, 4) xyxy (``x2 = cx + 0.5 * (w - 1)``)."""
        anchors = anchors.to(deltas.dtype)
        widths = anchors[:, 2] - anchors[:, 0] + TO_REMOVE
        heights = anchors[:, 3] - anchors[:, 1] + TO_REMOVE
        ctr_x = (anchors[:, 2] + anchors[:, 0]) / 2
        ctr_y = (anchors[:, 3] + anchors[:, 1]) / 2
        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0] / wx
        dy = deltas[:, 1] / wy
        dw = (deltas[:, 2] / ww).clamp(max=BBOX_XFORM_CLIP)
        dh = (deltas[:, 3] / wh).clamp(max=BBOX_XFORM_CLIP)
        pred_ctr_x = dx * widths + ctr_x
        pred_ctr_y = dy * heights + ctr_y
        pred_w = torch.exp(dw) * widths
        pred_h = torch.exp(dh) * heights
        return torch.stack(
            (
                pred_ctr_x - 0.5 * (pred_w - 1),
                pred_ctr_y - 0.5 * (pred_h - 1),
                pred_ctr_x + 0.5 * (pred_w - 1),
                pred_ctr_y + 0.5 * (pred_h - 1),
            ),
            dim=1,
        )
