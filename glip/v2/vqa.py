"""GLIPv2 VQA training: collated VQA batches and the answer + entity-grounding losses. The model
(:class:`GLIPForVQA`, :class:`VQAHead`, answering) is :mod:`glip.models.vqa`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from glip.data.types import Batch, collate
from glip.losses.grounding import output_losses
from glip.models.vqa import GLIPForVQA, VQAHead, VQAOutput, VQAPrediction

__all__ = ["GLIPForVQA", "VQABatch", "VQAHead", "VQAOutput", "VQAPrediction", "collate_vqa", "vqa_losses"]


@dataclass
class VQABatch:
    """A collated VQA batch: ``batch`` (images, question tokens, entity targets) and answer ids (B,)."""

    batch: Batch
    answer_ids: torch.Tensor
    kinds: list[str]

    def to(self, device: torch.device | str) -> VQABatch:
        return VQABatch(self.batch.to(device), self.answer_ids.to(device), self.kinds)


def collate_vqa(items: Sequence, answers: Sequence[str]) -> VQABatch:
    """:class:`glip.data.synthetic.vl.VLItem` s (task "vqa") -> :class:`VQABatch`; unknown answers raise."""
    index = {a: i for i, a in enumerate(answers)}
    missing = [it.answer for it in items if it.answer not in index]
    if missing:
        raise ValueError(f"answers {missing[:3]} are not in the answer vocabulary ({len(answers)} answers)")
    return VQABatch(
        collate([it.sample for it in items]),
        torch.tensor([index[it.answer] for it in items], dtype=torch.long),
        [it.kind for it in items],
    )


def vqa_losses(
    model: GLIPForVQA, batch: VQABatch, ground_weight: float = 1.0, fpn: list[torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """``loss_vqa`` (cross-entropy over the answers), ``loss_vqa_entity`` (the head's token weights towards
    the question entity's tokens: cross-entropy against the uniform distribution over them) plus, if
    ``ground_weight`` > 0, the grounding losses of the question's entity boxes (``loss_vqa_token`` /
    ``_giou`` / ``_centerness``, scaled by the weight)."""
    inner = batch.batch
    output = model(inner.images, inner.input_ids, inner.attention_mask, fpn=fpn)
    losses = {
        "loss_vqa": F.cross_entropy(output.answer_logits, batch.answer_ids),
        "loss_vqa_entity": entity_token_loss(model, output, inner),
    }
    if ground_weight > 0:
        ground, _ = output_losses(output.glip, inner.targets)
        for key, value in ground.items():
            losses[key.replace("loss_", "loss_vqa_")] = value * ground_weight
    return losses


def entity_token_loss(model: GLIPForVQA, output: VQAOutput, batch: Batch) -> torch.Tensor:
    """Cross-entropy of the VQA head's token weights (B, T) against the uniform distribution over each
    question's entity tokens (the union of its targets' token maps); questions without one are left out."""
    fused = output.glip.head.fused_text
    weights = model.head.token_weights(fused, output.glip.text.mask)  # (B, T)
    length = weights.shape[1]
    entity = torch.stack(
        [
            t.token_map[:, :length].any(dim=0)
            if len(t.token_map)
            else weights.new_zeros(length, dtype=torch.bool)
            for t in batch.targets
        ]
    ).to(weights.dtype)
    has = entity.sum(dim=1) > 0
    if not bool(has.any()):
        return weights.sum() * 0.0
    target = entity[has] / entity[has].sum(dim=1, keepdim=True)
    return -(target * weights[has].clamp(min=1e-9).log()).sum(dim=1).mean()
