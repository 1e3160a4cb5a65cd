"""Optimiser parameter groups and learning-rate schedules (official solver/build.py, lr_scheduler.py).

Groups: the text encoder trains at its own (lower) learning rate; biases get ``bias_lr_factor`` x the
rate and no weight decay; normalisation layers (LayerNorm, GroupNorm) get no weight decay either.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch
from torch import nn


def parameter_groups(
    model: nn.Module,
    lr: float,
    text_lr: float,
    weight_decay: float,
    bias_lr_factor: float = 2.0,
    backbone_lr_factor: float = 1.0,
    lr_factors: Sequence[tuple[str, float]] = (),
) -> list[dict]:
    """One group per (lr, weight decay) combination over trainable parameters.

    ``lr_factors``: ``(name prefix, factor)`` pairs (mmdetection's ``paramwise_cfg.custom_keys``): a parameter
    whose name starts with a prefix has its learning rate multiplied by the factor of the first match (after
    the text / backbone / bias rules), e.g. ``(("head.text_proj", 10.0),)``.
    """
    norm_params = {
        id(p)
        for module in model.modules()
        if isinstance(module, nn.LayerNorm | nn.GroupNorm | nn.BatchNorm2d)
        for p in module.parameters(recurse=False)
    }
    all_names = [name for name, _ in model.named_parameters()]
    for prefix, factor in lr_factors:
        if not any(name.startswith(prefix) for name in all_names):
            raise ValueError(f"lr_factors: no parameter name starts with {prefix!r}")
        if not factor >= 0:
            raise ValueError(f"lr_factors: factor of {prefix!r} must be >= 0, got {factor}")
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    names: dict[tuple[float, float], list[str]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group_lr = lr
        decay = weight_decay
        if name.startswith("text_encoder."):
            group_lr = text_lr
        elif name.startswith("backbone."):
            group_lr = lr * backbone_lr_factor
        if name.endswith(".bias") or name.endswith("bias0"):
            group_lr *= bias_lr_factor
            decay = 0.0
        for prefix, factor in lr_factors:
            if name.startswith(prefix):
                group_lr *= factor
                break
        if id(param) in norm_params or "relative_position_bias_table" in name:
            decay = 0.0
        key = (group_lr, decay)
        groups.setdefault(key, []).append(param)
        names.setdefault(key, []).append(name)
    return [
        {"params": params, "lr": key[0], "initial_lr": key[0], "weight_decay": key[1], "names": names[key]}
        for key, params in groups.items()
    ]


def lr_factor(
    step: int,
    total_steps: int,
    schedule: str = "multistep",
    warmup_steps: int = 0,
    warmup_factor: float = 0.001,
    milestones: tuple[float, ...] = (0.67, 0.89),
    gamma: float = 0.1,
    min_factor: float = 0.0,
) -> float:
    """Multiplier of the base learning rate at ``step`` (linear warm-up, then multi-step / cosine / constant).

    ``milestones`` below 1 are fractions of ``total_steps`` (official STEPS (0.67, 0.89)).
    """
    warm = 1.0
    if step < warmup_steps:
        alpha = step / warmup_steps
        warm = warmup_factor * (1 - alpha) + alpha
    if schedule == "constant":
        return warm
    if schedule == "multistep":
        points = [round(m * total_steps) if m < 1 else int(m) for m in milestones]
        return warm * gamma ** bisect.bisect_right(sorted(points), step)
    if schedule == "cosine":
        if step < warmup_steps:
            return warm
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    raise ValueError(f"unknown schedule {schedule!r} (multistep, cosine, constant)")


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, **kwargs
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, **kwargs))


class ModelEMA:
    """Exponential moving average of the weights (official SOLVER.MODEL_EMA)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                self.state[key].mul_(self.decay).add_(value.detach(), alpha=1 - self.decay)
            else:
                self.state[key].copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            self.state[key].copy_(value)
