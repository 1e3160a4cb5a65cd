"""ATSS inference post-processing, exactly as the official GLIP (rpn/inference.py ATSSPostProcessor).

Per level: sigmoid of the token logits, phrase score = mean of its tokens' probabilities, candidates with
score > 0.05 (before centerness), top 1000 by score * sigmoid(centerness), boxes decoded from anchors,
final score sqrt(score * centerness), clipped to the image. Then class-aware NMS with legacy "+1" areas
(IoU > 0.6 suppresses) and a cut to the 100 best (kthvalue: ties may keep more).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms

from glip.box_coder import BoxCoder


@dataclass
class Detections:
    """Detections of one image. boxes: (N, 4) xyxy pixels; scores: (N,); labels: (N,) int64 (1-based)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def select(self, keep: torch.Tensor) -> Detections:
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep])

    @staticmethod
    def empty(device: torch.device | str = "cpu") -> Detections:
        return Detections(
            torch.zeros(0, 4, device=device),
            torch.zeros(0, device=device),
            torch.zeros(0, dtype=torch.long, device=device),
        )

    @staticmethod
    def cat(parts: Sequence[Detections]) -> Detections:
        return Detections(
            torch.cat([p.boxes for p in parts]),
            torch.cat([p.scores for p in parts]),
            torch.cat([p.labels for p in parts]),
        )


LabelToTokens = Mapping[int, Sequence[int]]


def phrase_scores(
    token_probs: torch.Tensor, label_to_tokens: LabelToTokens
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean token probability per label (official SCORE_AGG "MEAN").

    token_probs: (A, T) -> (scores (A, K), label ids (K,)) for the K labels that have tokens, sorted.
    """
    labels = sorted(label for label, tokens in label_to_tokens.items() if len(tokens) > 0)
    if not labels:
        return token_probs.new_zeros(token_probs.shape[0], 0), torch.zeros(0, dtype=torch.long)
    columns = [token_probs[:, list(label_to_tokens[label])].mean(dim=-1) for label in labels]
    return torch.stack(columns, dim=1), torch.tensor(labels, dtype=torch.long)


def nms_legacy(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Class-aware greedy NMS with legacy "+1" areas (official ml_nms CUDA kernel semantics).

    boxes: (N, 4) xyxy; returns kept indices sorted by decreasing score. Suppresses when IoU > threshold.
    """
    # (x2 + 1, y2 + 1) turns the standard IoU into the legacy one: widths (x2 - x1 + 1).
    shifted = boxes.clone()
    shifted[:, 2:] += 1.0
    return batched_nms(shifted, scores, labels, threshold)


def postprocess_image(
    token_logits: Sequence[torch.Tensor],
    box_regression: Sequence[torch.Tensor],
    centerness: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    image_size_hw: tuple[int, int],
    label_to_tokens: LabelToTokens,
    pre_nms_thresh: float = 0.05,
    pre_nms_top_n: int = 1000,
    nms_thresh: float = 0.6,
    detections_per_img: int = 100,
    min_size: float = 0.0,
    box_coder: BoxCoder | None = None,
) -> Detections:
    """Detections for one image from its per-level head outputs.

    token_logits: L (A_l, T); box_regression: L (4, H_l, W_l); centerness: L (1, H_l, W_l);
    anchors: L (A_l, 4); image_size_hw: unpadded (H, W) used for clipping. Boxes in that frame.
    """
    coder = box_coder or BoxCoder()
    height, width = image_size_hw
    per_level = []
    for logits, deltas, ctr, level_anchors in zip(token_logits, box_regression, centerness, anchors):
        scores, label_ids = phrase_scores(logits.sigmoid(), label_to_tokens)  # (A, K)
        deltas = deltas.reshape(4, -1).t()  # (A, 4) row-major over (y, x), as the anchors
        ctr = ctr.reshape(-1).sigmoid()  # (A,)
        candidates = scores > pre_nms_thresh
        count = min(int(candidates.sum()), pre_nms_top_n)
        if count == 0:
            continue
        weighted = (scores * ctr[:, None])[candidates]
        weighted, top = weighted.topk(count, sorted=False)
        locations, classes = candidates.nonzero(as_tuple=True)
        locations, classes = locations[top], classes[top]
        boxes = coder.decode(deltas[locations], level_anchors[locations])
        boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=width - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=height - 1)
        dets = Detections(boxes, weighted.sqrt(), label_ids.to(boxes.device)[classes])
        widths = boxes[:, 2] - boxes[:, 0] + 1
        heights = boxes[:, 3] - boxes[:, 1] + 1
        per_level.append(dets.select((widths >= min_size) & (heights >= min_size)))
    if not per_level:
        return Detections.empty(token_logits[0].device)
    detections = Detections.cat(per_level)
    detections = detections.select(
        nms_legacy(detections.boxes, detections.scores, detections.labels, nms_thresh)
    )
    if len(detections) > detections_per_img > 0:
        threshold = torch.kthvalue(detections.scores.cpu(), len(detections) - detections_per_img + 1).values
        detections = detections.select(detections.scores >= threshold.item())
    return detections
