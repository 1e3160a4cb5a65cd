"""GLIPv2 language-guided instance segmentation: second-stage training of the mask head.

The head, its inference and its files are :mod:`glip.models.mask_head`; this module trains it.

The head (tower features RoI-aligned per box -> pixel embeddings (K, E, 28, 28), matched against the mean
fused text of the box's phrase -> mask logits (K, 28, 28)) is drawn with its shapes in
:mod:`glip.models.mask_head`. Training: BCE against the ground-truth mask sampled on the same 28 x 28 grid of
the box (``roi_align`` of the full-resolution mask, >= 0.5).

Second stage (:func:`train_segmentation`): the detector is frozen (eval mode, ``no_grad``) and only the mask
head is optimised, so every detector parameter and buffer stays bit-identical. The head lives beside the
model, in ``mask_head.safetensors`` + ``mask_head.json`` (:func:`save_mask_head` / :func:`load_mask_head`);
the detector's checkpoint format and configs are unchanged.

Boxes are the legacy "+1" xyxy used everywhere in glip (see :mod:`glip.models.mask_head` for the head's
continuous-box convention).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from glip.models.mask_head import MaskHead, continuous_boxes, phrase_features, save_mask_head

logger = logging.getLogger(__name__)

__all__ = ["SegmentationTrainConfig", "mask_loss", "mask_targets", "train_segmentation"]


# ----------------------------------------------------------------------------------------------- losses


def mask_targets(masks: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Ground truth on each box's grid: masks (N, H, W) bool, boxes (N, 4) legacy xyxy -> (N, size, size)
    float {0, 1} (``roi_align`` of mask n inside box n, >= 0.5)."""
    if len(masks) != len(boxes):
        raise ValueError(f"{len(masks)} masks for {len(boxes)} boxes")
    if len(boxes) == 0:
        return masks.new_zeros(0, size, size, dtype=torch.float32)
    index = torch.arange(len(boxes), dtype=torch.float32, device=boxes.device)[:, None]
    rois = torch.cat([index, continuous_boxes(boxes.float())], dim=1)
    sampled = roi_align(
        masks[:, None].float(), rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True
    )
    return (sampled[:, 0] >= 0.5).float()


def mask_loss(logits: torch.Tensor, targets: Sequence[Any]) -> torch.Tensor:
    """Mean per-pixel BCE of (K, M, M) logits against the masks of ``targets`` (B :class:`Target` with
    ``masks``; their boxes in the order the logits were computed)."""
    size = logits.shape[-1]
    wanted = torch.cat([mask_targets(t.masks, t.boxes, size) for t in targets]).to(logits.device)
    if len(wanted) == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits, wanted.to(logits.dtype))


# ----------------------------------------------------------------------------------------------- stage 2


@dataclass(frozen=True)
class SegmentationTrainConfig:
    """Second-stage training of the mask head (the detector frozen)."""

    out_dir: str | None = None  # mask_head.* and metrics.jsonl are written here when given
    max_steps: int = 1000
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # multistep | cosine | constant (glip.engine.optim.lr_factor)
    warmup_steps: int = 0
    clip_grad: float = 1.0  # 0 = off
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    log_every: int = 10
    progress: bool = False


def train_segmentation(
    model: nn.Module, mask_head: MaskHead, dataset: Any, config: SegmentationTrainConfig
) -> dict[str, Any]:
    """Train ``mask_head`` on ``dataset`` (of Samples whose targets have ``masks``) with ``model`` frozen.

    The detector runs in eval mode under ``torch.no_grad`` (its parameters and buffers stay bit-identical;
    its training mode is restored afterwards); samples without masks or boxes are left out of the loss.
    Reuses the trainer's seeded, resumable-order sampler and its learning-rate schedules. Returns
    ``{"step", "loss" (last logged mean), "history": [{"step", "loss", "lr"}], "out_dir"}``.
    """
    from torch.utils.data import DataLoader

    from glip.data.types import collate
    from glip.engine.optim import build_scheduler
    from glip.engine.train import ShardedEpochSampler
    from glip.runtime import resolve_device, to_device

    if config.max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {config.max_steps}")
    if len(dataset) == 0:
        raise ValueError("train_segmentation: the dataset is empty")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    was_training = model.training
    model.to(device).eval()
    mask_head.to(device).train()
    optimizer = torch.optim.AdamW(mask_head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = build_scheduler(
        optimizer, config.max_steps, schedule=config.schedule, warmup_steps=config.warmup_steps
    )
    sampler = ShardedEpochSampler(len(dataset), seed=config.seed)
    writer = None
    out_dir = Path(config.out_dir) if config.out_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "segmentation_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
        writer = (out_dir / "segmentation_metrics.jsonl").open("a")
    progress = None
    if config.progress:
        from tqdm import tqdm

        progress = tqdm(total=config.max_steps, desc="segmentation", unit="step", dynamic_ncols=True)
    history: list[dict[str, Any]] = []
    step, epoch, window, count, empty = 0, 0, 0.0, 0, 0
    tick = time.perf_counter()
    try:
        while step < config.max_steps:
            sampler.set_epoch(epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            loader = DataLoader(
                dataset,
                batch_size=config.batch_size,
                sampler=sampler,
                collate_fn=collate,
                num_workers=config.num_workers,
                drop_last=False,
            )
            used_any = False
            for batch in loader:
                keep = [i for i, t in enumerate(batch.targets) if t.masks is not None and len(t.boxes) > 0]
                if not keep:
                    empty += 1
                    continue
                used_any = True
                batch = to_device(batch, device)
                with torch.no_grad():
                    output = model(batch.images, batch.input_ids, batch.attention_mask)
                targets = [batch.targets[i] for i in keep]
                features = [f[keep] for f in output.head.features]
                words = phrase_features(output.head.fused_text[keep], [t.token_map for t in targets])
                logits = mask_head(features, [t.boxes for t in targets], words, batch.images.tensors[keep])
                loss = mask_loss(logits, targets)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite mask loss at step {step}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(mask_head.parameters(), config.clip_grad)
                optimizer.step()
                scheduler.step()
                step += 1
                window += float(loss.detach())
                count += 1
                if step % config.log_every == 0 or step == config.max_steps:
                    record = {
                        "step": step,
                        "epoch": epoch,
                        "loss_mask": window / count,
                        "lr": optimizer.param_groups[0]["lr"],
                        "steps_per_s": count / max(time.perf_counter() - tick, 1e-9),
                    }
                    history.append(record)
                    if writer is not None:
                        writer.write(json.dumps(record) + "\n")
                        writer.flush()
                    if progress is not None:
                        progress.set_postfix(loss=f"{record['loss_mask']:.4f}")
                    window, count, tick = 0.0, 0, time.perf_counter()
                if progress is not None:
                    progress.update(1)
                if step >= config.max_steps:
                    break
            if not used_any:
                raise ValueError(
                    "train_segmentation: no sample of the dataset has instance masks (Target.masks); build the "
                    "dataset with masks=True on annotations that have a 'segmentation'"
                )
            epoch += 1
    finally:
        if progress is not None:
            progress.close()
        if writer is not None:
            writer.close()
        model.train(was_training)
    mask_head.eval()
    if empty:
        logger.info("train_segmentation: %d batch(es) without masks were skipped", empty)
    if out_dir is not None:
        save_mask_head(mask_head, out_dir)
    last = history[-1]["loss_mask"] if history else float("nan")
    return {"step": step, "loss": last, "history": history, "out_dir": str(out_dir) if out_dir else None}
