"""GLIP training losses: token-level sigmoid focal loss on S_ground, GIoU, centerness BCE.

Official: maskrcnn_benchmark/modeling/rpn/loss.py (ATSSLossComputation, GIoULoss) and
layers/sigmoid_focal_loss.py (TokenSigmoidFocalLoss "binary"). Normalisation as official: the token loss
and the centerness loss are divided by the number of positive anchors (averaged over processes), the GIoU
loss (weighted by centerness targets) by the sum of those targets, then multiplied by 2.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from glip.box_coder import BoxCoder
from glip.losses.atss import Assignment, atss_assign, centerness_targets

LOSS_KEYS = ("loss_token", "loss_giou", "loss_centerness")


@dataclass
class Target:
    """Ground truth of one image in the network-input frame.

    boxes: (G, 4) xyxy pixels of the resized (unpadded) image; labels: (G,) int64 >= 1;
    token_map: (G, T) binary, the tokens of each box's phrase (T >= the model's text length).
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    token_map: torch.Tensor
    masks: torch.Tensor | None = None  # (G, H, W) bool instance masks in the same frame (segmentation data)
    # GLIPv2 category propagation (glip/text/phrases.py): (G,) int64 phrase id of each box, and (T,) int64 the
    # phrase id of every token position (-1: no phrase). None when the data does not provide them.
    phrase_ids: torch.Tensor | None = None
    token_phrase_ids: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Target:
        return dataclasses.replace(
            self,
            boxes=self.boxes.to(device),
            labels=self.labels.to(device),
            token_map=self.token_map.to(device),
            masks=None if self.masks is None else self.masks.to(device),
            phrase_ids=None if self.phrase_ids is None else self.phrase_ids.to(device),
            token_phrase_ids=None if self.token_phrase_ids is None else self.token_phrase_ids.to(device),
        )


def token_sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    text_mask: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Sum over (anchor, token) pairs of real tokens. logits, targets: (B, A, T); text_mask: (B, T)."""
    keep = (text_mask > 0)[:, None, :].expand_as(logits)
    logits = logits[keep]
    targets = targets[keep]
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.sum()


def giou_loss(
    pred_deltas: torch.Tensor,
    target_deltas: torch.Tensor,
    anchors: torch.Tensor,
    weight: torch.Tensor | None = None,
    box_coder: BoxCoder | None = None,
) -> torch.Tensor:
    """Official GIoULoss on decoded boxes (areas *without* "+1"). (P, 4) x3, weight (P,) -> scalar sum."""
    coder = box_coder or BoxCoder()
    pred = coder.decode(pred_deltas, anchors)
    target = coder.decode(target_deltas, anchors)
    px1, py1 = pred[:, 0], pred[:, 1]
    px2, py2 = torch.max(px1, pred[:, 2]), torch.max(py1, pred[:, 3])
    tx1, ty1, tx2, ty2 = target.unbind(dim=1)
    pred_area = (px2 - px1) * (py2 - py1)
    target_area = (tx2 - tx1) * (ty2 - ty1)
    ix1, iy1 = torch.max(px1, tx1), torch.max(py1, ty1)
    ix2, iy2 = torch.min(px2, tx2), torch.min(py2, ty2)
    valid = (iy2 > iy1) & (ix2 > ix1)
    intersection = torch.where(valid, (ix2 - ix1) * (iy2 - iy1), torch.zeros_like(ix1))
    enclosing = (torch.max(px2, tx2) - torch.min(px1, tx1)) * (
        torch.max(py2, ty2) - torch.min(py1, ty1)
    ) + 1e-7
    union = pred_area + target_area - intersection + 1e-7
    gious = intersection / union - (enclosing - union) / enclosing
    losses = 1 - gious
    if weight is not None and weight.sum() > 0:
        return (losses * weight).sum()
    return losses.sum()


def _reduce_mean(value: float, device: torch.device) -> float:
    """Average a Python number over processes (official reduce_sum / world size)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / dist.get_world_size()


def glip_losses(
    token_logits: Sequence[torch.Tensor],
    box_regression: Sequence[torch.Tensor],
    centerness: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    targets: Sequence[Target],
    text_mask: torch.Tensor,
    topk: int = 9,
    reg_loss_weight: float = 2.0,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    box_coder: BoxCoder | None = None,
) -> tuple[dict[str, torch.Tensor], list[Assignment]]:
    """The GLIP loss dict (keys :data:`LOSS_KEYS`) and the per-image ATSS assignments.

    token_logits: L (B, A_l, T); box_regression: L (B, 4, H_l, W_l); centerness: L (B, 1, H_l, W_l);
    anchors: L (A_l, 4) shared by the batch; text_mask: (B, T).
    """
    coder = box_coder or BoxCoder()
    batch, length = text_mask.shape
    assignments = [
        atss_assign(
            anchors, t.boxes, t.labels, t.token_map[:, :length].float(), topk, coder, no_object_token=255
        )
        for t in targets
    ]
    logits = torch.cat(list(token_logits), dim=1)  # (B, A, T)
    deltas = torch.cat([r.permute(0, 2, 3, 1).reshape(batch, -1, 4) for r in box_regression], dim=1).reshape(
        -1, 4
    )
    ctr = torch.cat([c.permute(0, 2, 3, 1).reshape(batch, -1) for c in centerness], dim=1).reshape(-1)
    all_anchors = torch.cat(list(anchors), dim=0).repeat(batch, 1)  # (B*A, 4), image-major
    labels = torch.cat([a.labels for a in assignments])
    reg_targets = torch.cat([a.reg_targets for a in assignments])
    token_targets = torch.stack([a.token_targets for a in assignments])  # type: ignore[misc]

    positive = torch.nonzero(labels > 0).squeeze(1)
    num_pos = max(_reduce_mean(float(positive.numel()), logits.device), 1.0)
    loss_token = (
        token_sigmoid_focal_loss(logits, token_targets, text_mask, focal_alpha, focal_gamma) / num_pos
    )

    if positive.numel() > 0:
        pos_anchors = all_anchors[positive]
        pos_targets = reg_targets[positive]
        ctr_targets = centerness_targets(pos_targets, pos_anchors, coder)
        ctr_sum = _reduce_mean(float(ctr_targets.sum().item()), logits.device)
        loss_giou = giou_loss(deltas[positive], pos_targets, pos_anchors, ctr_targets, coder) / ctr_sum
        loss_ctr = F.binary_cross_entropy_with_logits(ctr[positive], ctr_targets, reduction="sum") / num_pos
    else:
        _reduce_mean(0.0, logits.device)  # keep the collective calls matched across processes
        loss_giou = deltas.sum() * 0
        loss_ctr = ctr.sum() * 0
    return {
        "loss_token": loss_token,
        "loss_giou": loss_giou * reg_loss_weight,
        "loss_centerness": loss_ctr,
    }, assignments


def output_losses(
    output: Any, targets: Sequence[Target], **kwargs: Any
) -> tuple[dict[str, torch.Tensor], list]:
    """:func:`glip_losses` on a :class:`glip.models.glip.GLIPOutput` (its head outputs, anchors and text mask).

    ``kwargs`` go to :func:`glip_losses` (``topk``, ``reg_loss_weight``, ...).
    """
    head = output.head
    return glip_losses(
        head.token_logits,
        head.box_regression,
        head.centerness,
        output.anchors,
        targets,
        output.text.mask,
        **kwargs,
    )
