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


class PhrasePlan:
    """Which token columns each label averages, grouped by token count (built once per label->tokens map).

    labels: (K,) int64 label ids that have tokens, sorted; groups: per token count n, the output columns
    (K_n,) of its labels and their token positions (K_n * n,), label after label.
    """

    def __init__(self, label_to_tokens: LabelToTokens) -> None:
        labels = sorted(label for label, tokens in label_to_tokens.items() if len(tokens) > 0)
        self.labels = torch.tensor(labels, dtype=torch.long)
        grouped: dict[int, tuple[list[int], list[int]]] = {}
        for column, label in enumerate(labels):
            tokens = [int(t) for t in label_to_tokens[label]]
            columns, positions = grouped.setdefault(len(tokens), ([], []))
            columns.append(column)
            positions.extend(tokens)
        self.groups = [
            (count, torch.tensor(columns, dtype=torch.long), torch.tensor(positions, dtype=torch.long))
            for count, (columns, positions) in grouped.items()
        ]
        self._on: dict[torch.device, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}

    def groups_on(self, device: torch.device) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """The groups with their index tensors on ``device`` (copied once per device)."""
        if device not in self._on:
            self._on[device] = [(n, c.to(device), t.to(device)) for n, c, t in self.groups]
        return self._on[device]


def phrase_scores(
    token_probs: torch.Tensor, label_to_tokens: LabelToTokens | PhrasePlan
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean token probability per label (official SCORE_AGG "MEAN").

    token_probs: (A, T) -> (scores (A, K), label ids (K,)) for the K labels that have tokens, sorted.

    Vectorised over the labels: one gather and one mean per distinct token count (the official code loops
    over labels, one gather + mean each: 80 labels x 5 levels = 400 small kernels per COCO image). The same
    bits as that loop (a ``token_probs @ positive_map.T`` product is not: its sums round differently,
    ~2e-7); :func:`phrase_scores_loop` is the literal loop, kept for the test.
    """
    plan = label_to_tokens if isinstance(label_to_tokens, PhrasePlan) else PhrasePlan(label_to_tokens)
    num = int(plan.labels.numel())
    if num == 0:
        return token_probs.new_zeros(token_probs.shape[0], 0), plan.labels
    anchors = token_probs.shape[0]
    groups = plan.groups_on(token_probs.device)
    if len(groups) == 1:
        count, _, positions = groups[0]
        return token_probs[:, positions].view(anchors, num, count).mean(dim=-1), plan.labels
    scores = token_probs.new_empty(anchors, num)
    for count, columns, positions in groups:
        scores[:, columns] = token_probs[:, positions].view(anchors, -1, count).mean(dim=-1)
    return scores, plan.labels


def phrase_scores_loop(
    token_probs: torch.Tensor, label_to_tokens: LabelToTokens
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official per-label loop of :func:`phrase_scores` (reference for its test)."""
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
    label_to_tokens: LabelToTokens | PhrasePlan,
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
    plan = label_to_tokens if isinstance(label_to_tokens, PhrasePlan) else PhrasePlan(label_to_tokens)
    label_ids = plan.labels.to(token_logits[0].device) if token_logits else plan.labels
    per_level = []
    # Host synchronisation: one nonzero per level (the candidate count sets every later shape) and inside
    # the NMS; the detections_per_img cut compares on the device.
    for logits, deltas, ctr, level_anchors in zip(token_logits, box_regression, centerness, anchors):
        scores, _ = phrase_scores(logits.sigmoid(), plan)  # (A, K)
        deltas = deltas.reshape(4, -1).t()  # (A, 4) row-major over (y, x), as the anchors
        ctr = ctr.reshape(-1).sigmoid()  # (A,)
        # flat (location * K + class) indices of the candidates, in the order boolean indexing gives them
        flat = (scores > pre_nms_thresh).view(-1).nonzero().squeeze(1)
        count = min(int(flat.numel()), pre_nms_top_n)
        if count == 0:
            continue
        weighted = (scores * ctr[:, None]).view(-1)[flat]
        weighted, top = weighted.topk(count, sorted=False)
        flat = flat[top]
        num_labels = scores.shape[1]
        locations, classes = flat // num_labels, flat % num_labels
        boxes = coder.decode(deltas[locations], level_anchors[locations])
        boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=width - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=height - 1)
        dets = Detections(boxes, weighted.sqrt(), label_ids[classes])
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
        threshold = torch.kthvalue(detections.scores, len(detections) - detections_per_img + 1).values
        detections = detections.select(detections.scores >= threshold)
    return detections
