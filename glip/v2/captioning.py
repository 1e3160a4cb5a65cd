"""GLIPv2 captioning training and scoring: the causal language-modelling loss (+ word grounding) and caption
metrics. The model (:class:`GLIPForCaptioning`, decoding, grounded words) is :mod:`glip.models.captioning`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from glip.data.types import Batch
from glip.losses.grounding import output_losses
from glip.models.captioning import GLIPForCaptioning

__all__ = ["caption_losses", "caption_scores"]


def caption_losses(
    model: GLIPForCaptioning, batch: Batch, ground_weight: float = 1.0, fpn: list[torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """``loss_caption``: next-token cross-entropy over the real tokens after [CLS] (mean); with
    ``ground_weight`` > 0 also the grounding losses of every captioned object in the same causal forward
    (``loss_caption_token`` / ``_giou`` / ``_centerness``, scaled by the weight)."""
    # position t predicts token t + 1: the logits of the positions whose next token is real, (N, V)
    rows = torch.zeros_like(batch.attention_mask, dtype=torch.bool)
    rows[:, :-1] = batch.attention_mask[:, 1:] != 0
    output = model(batch.images, batch.input_ids, batch.attention_mask, fpn=fpn, rows=rows)
    targets = batch.input_ids[:, 1:][rows[:, :-1]]  # (N,)
    losses = {"loss_caption": F.cross_entropy(output.token_logits, targets)}
    if ground_weight > 0:
        ground, _ = output_losses(output.glip, batch.targets)
        for key, value in ground.items():
            losses[key.replace("loss_", "loss_caption_")] = value * ground_weight
    return losses


def caption_scores(
    predictions: Sequence[Sequence[int]], references: Sequence[Sequence[int]]
) -> dict[str, float]:
    """Exact match and mean token F1 (bag of word-piece ids, no special tokens) over caption pairs."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    exact, f1 = 0.0, 0.0
    for pred, ref in zip(predictions, references):
        exact += float(list(pred) == list(ref))
        common = sum(min(list(pred).count(t), list(ref).count(t)) for t in set(pred))
        if common:
            precision, recall = common / len(pred), common / len(ref)
            f1 += 2 * precision * recall / (precision + recall)
    return {"exact_match": exact / len(predictions), "token_f1": f1 / len(predictions)}
