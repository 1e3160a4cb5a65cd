"""Official GLIP state-dict names <-> ours: an explicit, ordered rule table and a strict report.

Official names (``rpn.head.dyhead_tower.3.b_attn.gamma_v`` ...) live only in this module. The mapping is
computed per model, because the official tower is one flat ``nn.Sequential`` whose indices depend on the
architecture (deep fusion: [fusion, BERT layer, DyConv] per block; late fusion: [DyConv] per block).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

# (our prefix regex, official replacement) applied to the part of the key after the block prefix.
_FUSION_RULES: list[tuple[str, str]] = [
    (r"^vision_norm\.", "b_attn.layer_norm_v."),
    (r"^text_norm\.", "b_attn.layer_norm_l."),
    (r"^vision_gamma$", "b_attn.gamma_v"),
    (r"^text_gamma$", "b_attn.gamma_l"),
    (r"^attn\.vision_query\.", "b_attn.attn.v_proj."),
    (r"^attn\.text_key\.", "b_attn.attn.l_proj."),
    (r"^attn\.vision_value\.", "b_attn.attn.values_v_proj."),
    (r"^attn\.text_value\.", "b_attn.attn.values_l_proj."),
    (r"^attn\.vision_out\.", "b_attn.attn.out_v_proj."),
    (r"^attn\.text_out\.", "b_attn.attn.out_l_proj."),
]
_DYCONV_RULES: list[tuple[str, str]] = [
    (r"^conv_coarser\.", "DyConv.0."),
    (r"^conv_same\.", "DyConv.1."),
    (r"^conv_finer\.", "DyConv.2."),
    (r"^scale_attn\.", "AttnConv.1."),
    (r"^dyrelu\.fc\.", "relu.fc."),
    (r"^offset\.", "offset."),
]
# Keys outside the tower.
_TOP_RULES: list[tuple[str, str]] = [
    (r"^backbone\.body\.", "backbone.body.body."),  # EfficientNet (not an official architecture)
    (r"^backbone\.", "backbone.body."),
    (r"^fpn\.lateral_convs\.(\d+)\.", "backbone.fpn.fpn_inner{+2}."),
    (r"^fpn\.output_convs\.(\d+)\.", "backbone.fpn.fpn_layer{+2}."),
    (r"^fpn\.p6\.", "backbone.fpn.top_blocks.p6."),
    (r"^fpn\.p7\.", "backbone.fpn.top_blocks.p7."),
    (r"^text_encoder\.bert\.", "language_backbone.body.model."),
    (r"^head\.text_proj\.", "rpn.head.dot_product_projection_text."),
    (r"^head\.text_bias$", "rpn.head.bias_lang"),
    (r"^head\.prompt_offset$", "rpn.tunable_linear.weight"),
    (r"^head\.", "rpn.head."),
    (r"^anchor_generator\.", "rpn.anchor_generator."),
]

# Keys that old checkpoints may carry and that we ignore (non-persistent buffers in current transformers).
IGNORED_OFFICIAL_KEYS = ("language_backbone.body.model.embeddings.position_ids",)


def _apply(rules: list[tuple[str, str]], key: str) -> str | None:
    for pattern, replacement in rules:
        match = re.match(pattern, key)
        if match:
            if "{+2}" in replacement:
                replacement = replacement.replace("{+2}", str(int(match.group(1)) + 2))
            return replacement + key[match.end() :]
    return None


def tower_indices(model: nn.Module) -> dict[tuple[int, str], int]:
    """(block index, part) -> index in the official ``dyhead_tower`` Sequential."""
    indices: dict[tuple[int, str], int] = {}
    position = 0
    for block_index, block in enumerate(model.head.blocks):  # type: ignore[union-attr]
        for part in ("fusion", "text_layer", "dyconv"):
            if getattr(block, part) is not None:
                indices[(block_index, part)] = position
                position += 1
    return indices


def official_name_map(model: nn.Module) -> dict[str, str]:
    """Our state-dict key -> official key, for every entry of ``model.state_dict()``."""
    tower = tower_indices(model)
    mapping: dict[str, str] = {}
    for key in model.state_dict():
        match = re.match(r"^head\.blocks\.(\d+)\.(fusion|text_layer|dyconv)\.", key)
        if match:
            block, part = int(match.group(1)), match.group(2)
            rest = key[match.end() :]
            prefix = f"rpn.head.dyhead_tower.{tower[(block, part)]}."
            if part == "fusion":
                official = _apply(_FUSION_RULES, rest)
            elif part == "dyconv":
                official = _apply(_DYCONV_RULES, rest)
            else:
                official = rest
            if official is None:
                raise KeyError(f"no official name rule for {key}")
            mapping[key] = prefix + official
            continue
        official = _apply(_TOP_RULES, key)
        if official is None:
            raise KeyError(f"no official name rule for {key}")
        mapping[key] = official
    return mapping


@dataclass
class LoadReport:
    """What a checkpoint load found. ``ok`` when nothing is missing, unexpected or mis-shaped."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self, limit: int = 10) -> str:
        lines = []
        for title, items in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape mismatch (name, checkpoint, model)", self.shape_mismatch),
        ):
            if items:
                shown = ", ".join(str(i) for i in items[:limit])
                more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
                lines.append(f"{len(items)} {title}: {shown}{more}")
        return "; ".join(lines) if lines else "all keys matched"


def normalize_official_state(checkpoint: object) -> dict[str, torch.Tensor]:
    """Unwrap an official checkpoint: optional ``{"model": ...}``, ``module.`` prefix only if on every key."""
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("the file does not hold a state dict (a mapping of names to tensors)")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def from_official(
    model: nn.Module, official_state: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Rename an official state dict to ours and report missing / unexpected / mis-shaped keys."""
    mapping = official_name_map(model)
    inverse = {official: ours for ours, official in mapping.items()}
    own = model.state_dict()
    report = LoadReport()
    converted: dict[str, torch.Tensor] = {}
    for official_key, value in official_state.items():
        if official_key in IGNORED_OFFICIAL_KEYS:
            report.ignored.append(official_key)
            continue
        ours = inverse.get(official_key)
        if ours is None:
            report.unexpected.append(official_key)
            continue
        if tuple(value.shape) != tuple(own[ours].shape):
            report.shape_mismatch.append((official_key, tuple(value.shape), tuple(own[ours].shape)))
            continue
        converted[ours] = value
    mismatched = {name for name, _, _ in report.shape_mismatch}
    report.missing = [mapping[k] for k in own if k not in converted and mapping[k] not in mismatched]
    return converted, report


def to_official(model: nn.Module, state: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Our state dict (default: the model's) renamed to the official layout."""
    mapping = official_name_map(model)
    state = model.state_dict() if state is None else state
    return {mapping[k]: v for k, v in state.items()}
