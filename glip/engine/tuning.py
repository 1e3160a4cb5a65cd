"""Transfer modes: which parameters learn.

* ``full``: everything (except the vestigial ``cls_logits``, frozen as official).
* ``prompt``: official ``language_prompt_v2``: a zero-initialised learnable offset added to the text
  features before the head (``head.prompt_offset``, official ``rpn.tunable_linear``); all else frozen.
* ``linear``: official ``linear_prob``: only the output layers (box, centerness, the grounding projection,
  its scale and biases).
Freezing by module group: ``backbone``, ``fpn``, ``text``, ``fusion``, ``head``.
"""

from __future__ import annotations

import torch
from torch import nn

from glip.models.head import PROMPT_TUNING_ROWS

TUNE_MODES = ("full", "prompt", "linear")
LINEAR_PROBE_PARAMS = (
    "head.bbox_pred.",
    "head.centerness.",
    "head.text_proj.",
    "head.log_scale",
    "head.text_bias",
    "head.bias0",
)
GROUPS = {
    "backbone": ("backbone.",),
    "fpn": ("fpn.",),
    "text": ("text_encoder.",),
    "fusion": (".fusion.", ".text_layer."),
    "head": ("head.",),
}


def ensure_prompt_offset(model: nn.Module) -> nn.Parameter:
    """Give the head its prompt-tuning offset if it has none (zero-initialised, so outputs are unchanged)."""
    head = model.head  # type: ignore[attr-defined]
    if head.prompt_offset is None:
        device = head.text_bias.device
        head.prompt_offset = nn.Parameter(
            torch.zeros(PROMPT_TUNING_ROWS, head.text_bias.shape[0], device=device)
        )
    return head.prompt_offset


def hold_frozen_norms(model: nn.Module) -> int:
    """Put every batch norm whose parameters are all frozen into eval mode (call after ``model.train()``).

    A frozen batch norm left in train mode normalises with the batch's statistics and moves its running
    mean / variance: prompt tuning or a frozen backbone group would change the "frozen" weights (the timm
    EfficientNet of ``tiny`` has 49 of them). Frozen means fixed statistics too, as for the frozen backbone
    stages (:class:`glip.models.frozen.FrozenStages`). Returns how many were switched."""
    held = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            if not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()
                held += 1
    return held


def apply_tuning(model: nn.Module, mode: str = "full", freeze: tuple[str, ...] = ()) -> list[str]:
    """Set ``requires_grad`` for a transfer mode; returns the names of the trainable parameters."""
    if mode not in TUNE_MODES:
        raise ValueError(f"unknown tuning mode {mode!r}: choose one of {', '.join(TUNE_MODES)}")
    unknown = set(freeze) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown freeze groups {sorted(unknown)}: choose from {', '.join(GROUPS)}")
    if mode == "prompt":
        ensure_prompt_offset(model)
    for name, param in model.named_parameters():
        if mode == "full":
            trainable = True
        elif mode == "prompt":
            trainable = name == "head.prompt_offset"
        else:
            trainable = name.startswith(LINEAR_PROBE_PARAMS)
        if name.startswith("head.cls_logits."):
            trainable = False
        if any(
            pattern in name if pattern.startswith(".") else name.startswith(pattern)
            for g in freeze
            for pattern in GROUPS[g]
        ):
            trainable = False
        param.requires_grad_(trainable)
    # Swin stages frozen by the config stay frozen
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(backbone, "_freeze_stages"):
        backbone._freeze_stages()
    return [name for name, p in model.named_parameters() if p.requires_grad]
