"""The training loop: a plain, visible loop (no runner, no hooks registry).

    from glip.engine.train import TrainConfig, fit
    fit(model, dataset, TrainConfig(out_dir="runs/x", max_steps=1000, batch_size=2))
    fit(model, dataset, config, criterion=Criterion(CriterionConfig(inter_loss_weight=0.5)))  # GLIPv2 losses

The losses come from a criterion (:class:`glip.losses.criterion.Criterion` by default): ``criterion(model,
batch)`` returns the weighted dict of losses the loop sums; its config is saved beside the run's
(``criterion_config.json``, and in every checkpoint).

The same call runs on one CPU or under ``torchrun --nproc-per-node N`` (DDP, gloo on CPU, NCCL on GPU):
each process takes its shard of every epoch (a seeded permutation, like ``DistributedSampler``), the loss
normalisers (number of positives, centerness sum) are averaged over processes as official, so N processes
with batch B equal 1 process with batch N*B. Rank 0 logs (progress bar, ``metrics.jsonl``, ``metrics.csv``,
TensorBoard when installed) and writes atomic checkpoints; ``resume=True`` continues exactly where a killed
run stopped (same data order, same RNG states).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from glip.config import OverrideError, parse_overrides
from glip.engine.checkpoint import (
    LAST,
    CheckpointLoadError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from glip.engine.distributed import all_reduce_mean, barrier, init_distributed
from glip.engine.optim import ModelEMA, build_scheduler, parameter_groups
from glip.engine.tuning import apply_tuning, hold_frozen_norms
from glip.fileio import atomic_write_text, open_append, remove_stale_temp_files
from glip.losses.criterion import Criterion, CriterionConfig
from glip.runtime import resolve_device, to_device, training_autocast

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a training run except the model (:class:`glip.config.GLIPConfig`) and the losses
    (:class:`glip.losses.criterion.CriterionConfig`)."""

    out_dir: str = "runs/glip"
    max_steps: int | None = None  # optimiser steps; or
    epochs: int | None = None
    batch_size: int = 2  # per process
    grad_accum: int = 1
    lr: float = 1e-4  # official BASE_LR
    text_lr: float = 1e-5  # official LANG_LR
    weight_decay: float = 1e-4
    bias_lr_factor: float = 2.0
    # (parameter-name prefix, learning-rate factor) pairs, first match wins, e.g. (("head.text_proj", 10.0),)
    lr_factors: tuple[tuple[str, float], ...] = ()
    schedule: str = "multistep"  # multistep | cosine | constant
    milestones: tuple[float, ...] = (0.67, 0.89)
    gamma: float = 0.1
    warmup_steps: int = 0
    warmup_factor: float = 0.001
    clip_grad: float = 1.0  # full-model L2 clip, 0 = off
    amp: str = "none"  # none | fp16 | bf16 (GPU; bf16 on CPU only with native support)
    ema: float = 0.0  # e.g. 0.999
    tune: str = "full"  # full | prompt | linear
    freeze: tuple[str, ...] = ()
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    ckpt_every: int = 200
    eval_every: int = 0
    device: str = "auto"
    deterministic: bool = False
    progress: bool = True


class ShardedEpochSampler(Sampler[int]):
    """Seeded permutation per epoch, padded to a multiple of ``world_size`` and sharded by rank (the
    ``DistributedSampler`` semantics), that can start mid-epoch (for exact resumption)."""

    def __init__(
        self,
        length: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        min_per_rank: int = 1,
    ) -> None:
        """``min_per_rank``: an epoch gives each process at least this many indices (samples repeat), so a
        dataset smaller than one batch (a 1-shot set, say) still fills a batch instead of an empty epoch."""
        self.length, self.rank, self.world_size = length, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.start = 0
        self.per_rank = max(math.ceil(length / world_size), min_per_rank)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / max(len(order), 1)))[:total]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start


class _MetricsWriter:
    """``metrics.jsonl`` / ``metrics.csv`` (appended, never through a planted link: :func:`open_append`) and
    TensorBoard when installed."""

    def __init__(self, out_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.jsonl = out_dir / "metrics.jsonl"
        self.csv = out_dir / "metrics.csv"
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"))
            except Exception:  # noqa: BLE001 - tensorboard is optional
                self.tb = None

    def truncate(self, step: int) -> int:
        """Drop the records after ``step`` (written after the checkpoint a run resumes from, they would be
        logged twice); rewritten atomically. Returns how many records were dropped."""
        if not self.enabled:
            return 0
        dropped = 0
        for path in (self.jsonl, self.csv):
            if not path.exists() or path.is_symlink():
                continue
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            if path == self.jsonl:
                kept = [line for line in lines if _record_step(line) <= step]
                dropped = len(lines) - len(kept)
            else:
                header, rows = lines[:1], lines[1:]
                kept = header + [r for r in rows if _csv_step(header, r) <= step]
            if len(kept) != len(lines):
                atomic_write_text(path, "".join(kept))
        return dropped

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open_append(self.jsonl, encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        new = not self.csv.exists() or self.csv.is_symlink()
        with open_append(self.csv, newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=sorted(record))
            if new:
                writer.writeheader()
            writer.writerow(record)
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _record_step(line: str) -> float:
    """The step of one ``metrics.jsonl`` line; an unreadable line (a write cut by a kill) counts as after
    every step, so it is dropped on resume."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def _csv_step(header: list[str], row: str) -> float:
    try:
        values = next(csv.DictReader([*header, row]))
        return float(values["step"])
    except (StopIteration, ValueError, KeyError, TypeError):
        return math.inf


# TrainConfig fields a resumed run cannot change: they fix the parameter groups, the data order or the
# checkpoint's contents (changing them would silently give another run than the one resumed)
FIXED_ON_RESUME = ("tune", "freeze", "lr_factors", "batch_size", "grad_accum", "seed", "ema", "amp")
# fields a resumed run takes from the new config (the optimiser's rates follow from the new step on)
RATE_FIELDS = ("lr", "text_lr", "weight_decay", "bias_lr_factor")


def _check_resume_config(saved: dict[str, Any] | None, config: TrainConfig, path: Path) -> list[str]:
    """Refuse a resume whose config changes a :data:`FIXED_ON_RESUME` field (a CheckpointLoadError naming
    them); returns the changed :data:`RATE_FIELDS` (honoured: the caller applies and reports them)."""
    if not saved:
        return []
    saved = json.loads(json.dumps(saved))  # tuples as lists on both sides
    current = json.loads(json.dumps(dataclasses.asdict(config)))
    fixed = [k for k in FIXED_ON_RESUME if k in saved and saved[k] != current[k]]
    if fixed:
        changes = "; ".join(f"{k}: {saved[k]!r} in the checkpoint, {current[k]!r} now" for k in fixed)
        raise CheckpointLoadError(
            f"cannot resume {path} with other settings ({changes}): resume with the checkpoint's "
            "settings, or start a new run (another --out, or --overwrite)"
        )
    return [k for k in RATE_FIELDS if k in saved and saved[k] != current[k]]


def _check_resume_model(saved: dict[str, Any] | None, model: nn.Module, path: Path) -> None:
    """A checkpoint of another architecture (another --preset or --set model key) is one clear error."""
    if not saved or not hasattr(model, "config"):
        return
    current = json.loads(json.dumps(model.config.to_dict()))
    saved = json.loads(json.dumps(saved))
    if saved == current:
        return
    changed = sorted(_flat_differences(saved, current))
    raise CheckpointLoadError(
        f"cannot resume {path}: it holds another model ({', '.join(changed[:8])}"
        f"{' ...' if len(changed) > 8 else ''} differ); resume with the checkpoint's --preset and --set "
        "model keys, or start a new run (another --out, or --overwrite)"
    )


def _flat_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted({*a, *b}, key=str):
            out += _flat_differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "config"]


def parse_train_overrides(items: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``glip train --set`` items -> (TrainConfig fields, CriterionConfig fields, model config keys).

    Loss settings go by ``loss.KEY`` or their bare field name (``loss.inter_loss_weight=0.5`` and
    ``inter_loss_weight=0.5`` are the same); an unknown ``loss.KEY`` is an ``OverrideError`` listing the known
    ones. Dotted model keys (``head.num_blocks=2``) are returned for :func:`glip.config.apply_overrides`.
    """
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    loss_fields = {f.name for f in dataclasses.fields(CriterionConfig)}
    for item in items:
        key = item.split("=", 1)[0]
        if key.startswith("loss.") and key[len("loss.") :] not in loss_fields:
            raise OverrideError(
                f"unknown loss setting {key[len('loss.') :]!r} in --set; known: {', '.join(sorted(loss_fields))}"
            )
    first_keys = train_fields | loss_fields | {f"loss.{name}" for name in loss_fields}
    first, model = parse_overrides(items, first_keys)
    first = {key.removeprefix("loss."): value for key, value in first.items()}
    train = {k: v for k, v in first.items() if k not in loss_fields}
    loss = {k: v for k, v in first.items() if k in loss_fields}
    return train, loss, model


def fit(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    collate_fn: Callable | None = None,
    resume: bool = False,
    eval_fn: Callable[[nn.Module, int], dict[str, float]] | None = None,
    criterion: Callable[[nn.Module, Any], dict[str, torch.Tensor]] | None = None,
    trust_pickle: bool = False,
) -> dict[str, Any]:
    """Train ``model`` on ``dataset`` (of :class:`glip.data.types.Sample`). Returns the final state summary.

    ``trust_pickle``: on resume, allow a ``last.pt`` that needs full unpickling (see
    :func:`glip.engine.checkpoint.load_checkpoint`); by default only tensors and plain data are read.
    ``criterion``: ``criterion(model, batch) -> dict of scalar losses`` (summed for the backward); default
    ``Criterion(CriterionConfig())``, GLIP's grounding losses. Optional members used when present:
    ``prepare(model) -> names of parameters to keep frozen`` (called before tuning; adds the GLIPv2 heads the
    losses need) and ``config`` (a dataclass, saved with the run and checked on resume).
    """
    from glip.data.types import collate as default_collate

    collate_fn = collate_fn or default_collate
    criterion = criterion if criterion is not None else Criterion(CriterionConfig())
    criterion_config = getattr(criterion, "config", None)
    criterion_dict = (
        dataclasses.asdict(criterion_config) if dataclasses.is_dataclass(criterion_config) else None
    )
    dist_info = init_distributed(None if config.device == "auto" else config.device)
    device = resolve_device(config.device, dist_info.local_rank if dist_info.enabled else None)
    out_dir = Path(config.out_dir)
    if dist_info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed + dist_info.rank)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    prepare = getattr(criterion, "prepare", None)
    fixed = set(prepare(model)) if prepare is not None else set()  # e.g. a fixed L_inter temperature
    trainable = apply_tuning(model, config.tune, config.freeze)
    if fixed:
        for name, parameter in model.named_parameters():
            if name in fixed:
                parameter.requires_grad_(False)
        trainable = [n for n in trainable if n not in fixed]
    model.to(device)
    if not trainable:
        raise ValueError("no trainable parameters: check --tune / --freeze")
    optimizer = torch.optim.AdamW(
        parameter_groups(
            model,
            config.lr,
            config.text_lr,
            config.weight_decay,
            config.bias_lr_factor,
            lr_factors=config.lr_factors,
        ),
        lr=config.lr,
    )
    sampler = ShardedEpochSampler(
        len(dataset), dist_info.rank, dist_info.world_size, config.seed, min_per_rank=config.batch_size
    )
    batches_per_epoch = max(1, len(sampler) // config.batch_size)
    steps_per_epoch = max(1, batches_per_epoch // config.grad_accum)
    if config.max_steps is None and config.epochs is None:
        raise ValueError("give max_steps or epochs")
    total_steps = (
        config.max_steps if config.max_steps is not None else steps_per_epoch * int(config.epochs or 1)
    )
    scheduler = build_scheduler(
        optimizer,
        total_steps,
        schedule=config.schedule,
        warmup_steps=config.warmup_steps,
        warmup_factor=config.warmup_factor,
        milestones=config.milestones,
        gamma=config.gamma,
    )
    ema = ModelEMA(model, config.ema) if config.ema > 0 else None
    autocast, use_scaler = training_autocast(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

    step, epoch, batch_in_epoch = 0, 0, 0
    checkpoint_path = out_dir / LAST
    if dist_info.is_main:
        for stale in remove_stale_temp_files(out_dir, LAST):  # left by a run killed while saving
            logger.info("removed %s (a checkpoint write cut by a kill)", stale.name)
    writer = _MetricsWriter(out_dir, dist_info.is_main)
    if resume and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, trust_pickle=trust_pickle)
        _check_resume_model(state.get("model_config"), model, checkpoint_path)
        rate_changes = _check_resume_config(state.get("train_config"), config, checkpoint_path)
        fresh_base_lrs = list(scheduler.base_lrs)  # the rates of this config (before the checkpoint's)
        fresh_decay = [group["weight_decay"] for group in optimizer.param_groups]
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            if ema is not None and state.get("ema") is not None:
                ema.load_state_dict(state["ema"])
            step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointLoadError(
                f"cannot resume {checkpoint_path}: it does not fit this model or optimiser ({first[:300]}); "
                "resume with the checkpoint's settings, or start a new run (another --out, or --overwrite)"
            ) from None
        # the rates of the new config apply from here on (unchanged rates give the same values bit for bit)
        scheduler.base_lrs = fresh_base_lrs
        for group, base, decay, rule in zip(
            optimizer.param_groups, fresh_base_lrs, fresh_decay, scheduler.lr_lambdas
        ):
            group["initial_lr"], group["weight_decay"] = base, decay
            group["lr"] = base * rule(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
        if dist_info.is_main and rate_changes:
            saved_config = state["train_config"]
            logger.warning(
                "resuming with changed rates: %s; the new values apply from step %d on",
                ", ".join(f"{k} {saved_config[k]} -> {getattr(config, k)}" for k in rate_changes),
                step,
            )
        saved = state.get("criterion_config")
        if dist_info.is_main and saved is not None and criterion_dict is not None and saved != criterion_dict:
            changed = sorted(k for k in {*saved, *criterion_dict} if saved.get(k) != criterion_dict.get(k))
            logger.warning("resuming with a different criterion config than the checkpoint's: %s", changed)
        set_rng_state(state["rng"][dist_info.rank] if isinstance(state["rng"], list) else state["rng"])
        dropped = writer.truncate(step)  # records logged after the checkpoint would appear twice
        if dist_info.is_main:
            logger.info(
                "resumed from %s at step %d (epoch %d, batch %d)%s",
                checkpoint_path,
                step,
                epoch,
                batch_in_epoch,
                f"; {dropped} metrics record(s) after step {step} removed from the log" if dropped else "",
            )
    elif resume and dist_info.is_main:
        logger.info("no checkpoint in %s: starting from scratch", out_dir)

    train_model: nn.Module = model
    if dist_info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    if dist_info.is_main:
        atomic_write_text(out_dir / "train_config.json", json.dumps(dataclasses.asdict(config), indent=2))
        if criterion_dict is not None:
            atomic_write_text(out_dir / "criterion_config.json", json.dumps(criterion_dict, indent=2))
        if hasattr(model, "config"):
            atomic_write_text(out_dir / "model_config.json", model.config.to_json())

    def save(path: Path) -> None:
        rngs = [rng_state()]
        if dist_info.enabled:
            from glip.engine.distributed import all_gather_objects

            rngs = all_gather_objects(rngs[0])  # type: ignore[assignment]
        if dist_info.is_main:
            save_checkpoint(
                path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "step": step,
                    "epoch": epoch,
                    "batch_in_epoch": batch_in_epoch,
                    "rng": rngs if dist_info.enabled else rngs[0],
                    "model_config": model.config.to_dict() if hasattr(model, "config") else None,
                    "train_config": dataclasses.asdict(config),
                    "criterion_config": criterion_dict,
                },
            )
        barrier()

    progress = None
    if dist_info.is_main and config.progress:
        from tqdm import tqdm

        progress = tqdm(total=total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    train_model.train()
    hold_frozen_norms(train_model)
    window: dict[str, float] = {}
    window_count = 0
    images_seen = 0
    tick = time.perf_counter()
    last_summary: dict[str, Any] = {}
    while step < total_steps:
        sampler.set_epoch(epoch, start=batch_in_epoch * config.batch_size)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        # the loader's own generator (seeded per epoch): creating its iterator draws a base seed, which
        # from the global generator would shift every later dropout mask of a resumed run
        loader_generator = torch.Generator().manual_seed(config.seed * 100003 + epoch + 7919 * dist_info.rank)
        loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            sampler=sampler,
            collate_fn=collate_fn,
            num_workers=config.num_workers,
            drop_last=True,
            generator=loader_generator,
        )
        micro = 0
        for batch in loader:
            batch = to_device(batch, device)
            sync = (micro + 1) % config.grad_accum == 0
            context = train_model.no_sync() if (dist_info.enabled and not sync) else contextlib.nullcontext()
            with context:
                with autocast:
                    losses = criterion(train_model, batch)
                loss = sum(losses.values()) / config.grad_accum
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite loss at step {step}: { {k: float(v) for k, v in losses.items()} }"
                    )
                scaler.scale(loss).backward()
            micro += 1
            batch_in_epoch += 1
            images_seen += len(batch.captions)
            for key, value in losses.items():
                window[key] = window.get(key, 0.0) + float(value.detach())
            window_count += 1
            if not sync:
                continue
            if config.clip_grad > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(
                    [p for p in model.parameters() if p.requires_grad], config.clip_grad
                )
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            step += 1
            if step % config.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - tick
                metrics = {k: v / max(window_count, 1) for k, v in window.items()}
                metrics["loss"] = sum(metrics.values())
                metrics = all_reduce_mean(metrics, device)
                metrics["lr"] = optimizer.param_groups[0]["lr"]
                metrics["images_per_s"] = images_seen * dist_info.world_size / max(elapsed, 1e-9)
                record = {"step": step, "epoch": epoch, **metrics}
                writer.write(record)
                last_summary = record
                if progress is not None:
                    progress.set_postfix(
                        loss=f"{metrics['loss']:.3f}", img_s=f"{metrics['images_per_s']:.2f}"
                    )
                window, window_count, images_seen, tick = {}, 0, 0, time.perf_counter()
            if progress is not None:
                progress.update(1)
            if config.ckpt_every and step % config.ckpt_every == 0:
                save(checkpoint_path)
            if eval_fn is not None and config.eval_every and step % config.eval_every == 0:
                results = eval_fn(model, step)
                writer.write({"step": step, **{f"eval/{k}": v for k, v in results.items()}})
                train_model.train()
                hold_frozen_norms(train_model)
            if step >= total_steps:
                break
        if step >= total_steps:
            break
        epoch += 1
        batch_in_epoch = 0
    save(checkpoint_path)
    if progress is not None:
        progress.close()
    writer.close()
    if ema is not None:
        model.load_state_dict(ema.state_dict())
    return {"step": step, "epoch": epoch, "last": last_summary, "checkpoint": str(checkpoint_path)}
