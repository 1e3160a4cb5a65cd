"""A small, visible training loop for GLIPv2 VL understanding: detection + VQA + captioning on shared images.

    from glip.v2.vl_train import VLTrainConfig, train_vl
    history = train_vl(glip, {"detection": det_data, "vqa": vqa_data, "caption": cap_data},
                       VLTrainConfig(steps=300), vqa=GLIPForVQA(glip, ANSWERS), captioner=GLIPForCaptioning(glip))

Every step draws one set of image indices and takes item k of each task's dataset, so the tasks see the
*same* images (the datasets of :class:`glip.data.synthetic.vl.SyntheticVL` over one seed / split / image
count are aligned: item k is image k). The backbone + FPN run once per step; the head runs once per task
(detection prompt, question, causal caption). A part of the GLIP with no trainable parameter (a frozen
backbone or text encoder, or the whole GLIP while only the task heads learn) runs in eval mode: fixed
batch-norm statistics and no dropout, as at inference; a frozen text encoder then encodes a detection prompt
that every image of the batch shares once. The loss is

    L = w_det * (token + GIoU + centerness on the class prompt)
      + w_vqa * (answer cross-entropy + entity-token weights + w_ground * grounding of the question's entity)
      + w_cap * (next-token cross-entropy + w_ground * grounding of every captioned object)

A weight of 0 leaves that task out, so "detection only" and "joint" runs differ only in the weights.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from glip.data.types import collate
from glip.losses.grounding import output_losses
from glip.models.captioning import GLIPForCaptioning
from glip.models.glip import GLIP
from glip.models.language import TextFeatures
from glip.v2.captioning import caption_losses
from glip.v2.vqa import GLIPForVQA, collate_vqa, vqa_losses

logger = logging.getLogger(__name__)

__all__ = ["VLTrainConfig", "eval_frozen_parts", "train_vl"]


@dataclass(frozen=True)
class VLTrainConfig:
    """Optimiser and loss weights of :func:`train_vl` (a weight of 0 switches a task off)."""

    steps: int = 300
    batch_size: int = 4
    lr: float = 1e-4  # GLIP (backbone, FPN, head)
    text_lr: float = 1e-5  # the pretrained text encoder (official LANG_LR)
    head_lr: float = 1e-3  # the new VQA / captioning heads
    gamma_lr: float | None = None  # the fusion layers' layer scales (text_gamma / vision_gamma); None: lr
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    clip_grad: float = 1.0
    detection_weight: float = 1.0
    vqa_weight: float = 1.0
    caption_weight: float = 1.0
    ground_weight: float = 1.0  # grounded VQA / captioning: the entity / word grounding losses
    seed: int = 0
    log_every: int = 25


def _parameter_groups(glip: GLIP, heads: list[nn.Module], config: VLTrainConfig) -> list[dict[str, object]]:
    text = [p for p in glip.text_encoder.parameters() if p.requires_grad]
    gammas = [
        p
        for n, p in glip.named_parameters()
        if p.requires_grad and n.endswith(("text_gamma", "vision_gamma"))
    ]
    if config.gamma_lr is None:
        gammas = []
    taken = {id(p) for p in [*text, *gammas]}
    rest = [p for p in glip.parameters() if p.requires_grad and id(p) not in taken]
    head = [p for module in heads for p in module.parameters() if p.requires_grad]
    groups = [
        {"params": rest, "lr": config.lr},
        {"params": text, "lr": config.text_lr},
        {"params": head, "lr": config.head_lr},
        {"params": gammas, "lr": config.gamma_lr},
    ]
    return [g for g in groups if g["params"]]


def eval_frozen_parts(model: nn.Module) -> list[str]:
    """Put every submodule that has parameters, none of them trainable, in eval mode (fixed batch-norm
    statistics, no dropout: what it computes at inference); returns the names of the outermost ones."""
    names: list[str] = []
    for name, module in model.named_modules():  # parents before their children
        if any(name.startswith(f"{done}.") for done in names):
            continue
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()
            if not name:  # the whole model
                return [name]
            names.append(name)
    return names


def _shared_prompt(glip: GLIP, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures | None:
    """The text features of a prompt every row of the batch shares, encoded once (the text encoder in eval
    mode, so each row's encoding would be the same); None when the rows differ or dropout is on."""
    if glip.text_encoder.training or input_ids.shape[0] < 2:
        return None
    if not (
        torch.equal(input_ids, input_ids[:1].expand_as(input_ids))
        and torch.equal(attention_mask, attention_mask[:1].expand_as(attention_mask))
    ):
        return None
    one = glip.encode_text(input_ids[:1], attention_mask[:1])
    rows = input_ids.shape[0]
    return TextFeatures(
        *(t.expand(rows, *t.shape[1:]).contiguous() for t in (one.hidden, one.embedded, one.mask))
    )


def train_vl(
    glip: GLIP,
    datasets: Mapping[str, Dataset],
    config: VLTrainConfig,
    vqa: GLIPForVQA | None = None,
    captioner: GLIPForCaptioning | None = None,
) -> list[dict[str, float]]:
    """Train in place; returns the logged history (step, seconds, each loss).

    Args:
        glip: the shared GLIP (``vqa.glip`` and ``captioner.glip`` must be this same module).
        datasets: ``{"detection" | "vqa" | "caption": dataset}`` of aligned
            :class:`~glip.data.synthetic.vl.SyntheticVL` items; only the tasks with a weight > 0 are used.
        config: :class:`VLTrainConfig`.
        vqa, captioner: the task wrappers (needed when their weight is > 0).
    """
    weights = {
        "detection": config.detection_weight,
        "vqa": config.vqa_weight,
        "caption": config.caption_weight,
    }
    active = [task for task, w in weights.items() if w > 0]
    if not active:
        raise ValueError("every task weight is 0: nothing to train")
    missing = [task for task in active if task not in datasets]
    if missing:
        raise ValueError(f"tasks {missing} have a weight > 0 but no dataset")
    for task, wrapper in (("vqa", vqa), ("caption", captioner)):
        if task in active and (wrapper is None or wrapper.glip is not glip):
            raise ValueError(f"task {task!r} needs its wrapper around this same GLIP model")
    sizes = {len(datasets[task]) for task in active}
    if len(sizes) != 1:
        raise ValueError(f"the task datasets must be aligned (same length), got lengths {sorted(sizes)}")
    num_items = sizes.pop()
    heads = [m.head for task, m in (("vqa", vqa), ("caption", captioner)) if task in active and m is not None]
    optimizer = torch.optim.AdamW(_parameter_groups(glip, heads, config), weight_decay=config.weight_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    generator = torch.Generator().manual_seed(config.seed)
    order: list[int] = []
    device = next(glip.parameters()).device
    modules = [glip, *heads]
    for module in modules:
        module.train()
    frozen = eval_frozen_parts(glip)
    if frozen:
        logger.info("frozen, in eval mode: %s", ", ".join(name or "the whole GLIP" for name in frozen))
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for step in range(1, config.steps + 1):
        while len(order) < config.batch_size:  # a seeded permutation per epoch
            order.extend(torch.randperm(num_items, generator=generator).tolist())
        indices, order = order[: config.batch_size], order[config.batch_size :]
        warmup = min(1.0, step / config.warmup_steps) if config.warmup_steps else 1.0
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = lr * warmup

        items = {task: [datasets[task][i] for i in indices] for task in active}
        first = collate([it.sample for it in items[active[0]]]).to(device)
        fpn = glip.encode_images(first.images.tensors)  # shared by the tasks: same images
        losses: dict[str, torch.Tensor] = {}
        if "detection" in active:
            batch = collate([it.sample for it in items["detection"]]).to(device)
            text = _shared_prompt(glip, batch.input_ids, batch.attention_mask)
            output = glip(batch.images, batch.input_ids, batch.attention_mask, fpn=fpn, text=text)
            det, _ = output_losses(output, batch.targets)
            losses.update({k: v * config.detection_weight for k, v in det.items()})
        if "vqa" in active:
            assert vqa is not None
            vqa_batch = collate_vqa(items["vqa"], vqa.answers).to(device)
            part = vqa_losses(vqa, vqa_batch, config.ground_weight, fpn=fpn)
            losses.update({k: v * config.vqa_weight for k, v in part.items()})
        if "caption" in active:
            assert captioner is not None
            batch = collate([it.sample for it in items["caption"]]).to(device)
            part = caption_losses(captioner, batch, config.ground_weight, fpn=fpn)
            losses.update({k: v * config.caption_weight for k, v in part.items()})
        total = sum(losses.values())
        if not math.isfinite(float(total.detach())):
            raise FloatingPointError(
                f"step {step}: non-finite loss { ({k: float(v) for k, v in losses.items()}) }"
            )
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if config.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(params, config.clip_grad)
        optimizer.step()
        if step % config.log_every == 0 or step == config.steps:
            row = {"step": float(step), "seconds": time.perf_counter() - start, "loss": float(total.detach())}
            row.update({k: float(v.detach()) for k, v in losses.items()})
            history.append(row)
            logger.info("step %d %s", step, " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "step"))
    for module in modules:
        module.eval()
    return history
