"""The training criterion: one object that turns a model and a batch into the weighted dict of losses.

Modelled on DETR's ``SetCriterion``: a frozen :class:`CriterionConfig` holds every loss setting (weights,
ATSS top-k, L_inter's temperature and gathering, the MLM masking probability), :class:`Criterion` runs the
one forward and computes

    L = ground_loss_weight * L_ground + inter_loss_weight * L_inter + mlm_loss_weight * L_mlm

where L_ground is GLIP's token focal + GIoU (x ``reg_loss_weight``) + centerness (:mod:`glip.losses.grounding`),
L_inter the GLIPv2 inter-image region-word contrastive loss (:mod:`glip.losses.contrastive`) and L_mlm the
masked language modelling loss (:mod:`glip.losses.mlm`). A weight of 0 switches a loss off (L_inter and L_mlm
are off by default). The returned dict is already weighted (``weight_dict`` lists the factors); the training
loop sums it.

    from glip.losses.criterion import Criterion, CriterionConfig
    criterion = Criterion(CriterionConfig(inter_loss_weight=0.5, mlm_loss_weight=0.1))
    fit(model, dataset, TrainConfig(...), criterion=criterion)

The contract :func:`glip.engine.train.fit` relies on (a custom criterion may implement the same):

* ``criterion(model, batch) -> dict[str, Tensor]`` scalar losses, summed for the backward;
* ``criterion.prepare(model)``: called once before tuning / optimiser creation (adds the GLIPv2 heads the
  losses need); returns the parameter names that must stay frozen (a fixed L_inter temperature);
* ``criterion.config``: a dataclass, saved with the run (``criterion_config.json`` and the checkpoint).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from glip.losses.contrastive import inter_image_loss
from glip.losses.grounding import LOSS_KEYS, output_losses
from glip.losses.mlm import bert_special_ids, mask_tokens, mlm_loss
from glip.models.pretrain_heads import ensure_v2_heads

__all__ = ["CriterionConfig", "CriterionConfigError", "Criterion"]

#: the parameter of the L_inter head frozen when ``inter_temperature`` is fixed
INTER_LOG_SCALE = "v2_heads.inter.log_scale"


class CriterionConfigError(ValueError):
    """A loss setting out of range, or an unknown key."""


@dataclass(frozen=True)
class CriterionConfig:
    """Every setting of the training losses (GLIP grounding + GLIPv2 L_inter / L_mlm, docs/glipv2.md)."""

    ground_loss_weight: float = 1.0  # the grounding losses (token, GIoU, centerness) together
    reg_loss_weight: float = 2.0  # GIoU, inside the grounding losses (official REG_LOSS_WEIGHT)
    topk: int = 9  # ATSS candidates per level
    inter_loss_weight: float = 0.0  # GLIPv2 L_inter, 0 = off
    inter_temperature: float | None = None  # None: the head's learnable temperature; a float: fixed
    inter_gather: bool = True  # contrast against the captions of every DDP process
    mlm_loss_weight: float = 0.0  # GLIPv2 L_mlm, 0 = off
    mlm_probability: float = 0.15  # BERT masking: chance a real token is chosen

    def __post_init__(self) -> None:
        for name in ("ground_loss_weight", "reg_loss_weight", "inter_loss_weight", "mlm_loss_weight"):
            if getattr(self, name) < 0:
                raise CriterionConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.topk < 1:
            raise CriterionConfigError(f"topk must be >= 1, got {self.topk}")
        if self.inter_temperature is not None and self.inter_temperature <= 0:
            raise CriterionConfigError(
                f"inter_temperature must be > 0 (or None for a learnable one), got {self.inter_temperature}"
            )
        if not 0.0 <= self.mlm_probability <= 1.0:
            raise CriterionConfigError(f"mlm_probability must be in [0, 1], got {self.mlm_probability}")

    @property
    def heads(self) -> tuple[str, ...]:
        """The GLIPv2 heads the losses need, in forward order (``"inter"``, ``"mlm"``)."""
        return tuple(
            n for n, w in (("inter", self.inter_loss_weight), ("mlm", self.mlm_loss_weight)) if w > 0
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CriterionConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CriterionConfigError(f"unknown CriterionConfig keys {unknown}; known: {sorted(names)}")
        return cls(**dict(data))


class Criterion:
    """GLIP + GLIPv2 training losses for one batch (see the module docstring)."""

    def __init__(self, config: CriterionConfig | None = None) -> None:
        self.config = config if config is not None else CriterionConfig()

    @property
    def weight_dict(self) -> dict[str, float]:
        """Loss key -> the weight already applied to it (the grounding keys share ``ground_loss_weight``;
        ``loss_giou`` carries ``reg_loss_weight`` on top)."""
        cfg = self.config
        weights = {key: cfg.ground_loss_weight for key in LOSS_KEYS}
        weights["loss_giou"] = cfg.ground_loss_weight * cfg.reg_loss_weight
        if cfg.inter_loss_weight > 0:
            weights["loss_inter"] = cfg.inter_loss_weight
        if cfg.mlm_loss_weight > 0:
            weights["loss_mlm"] = cfg.mlm_loss_weight
        return weights

    def prepare(self, model: nn.Module) -> tuple[str, ...]:
        """Give ``model`` (a GLIP) the GLIPv2 heads the losses need (freshly initialised when missing).

        Returns the names of parameters that must not be optimised: the L_inter head's ``log_scale`` when
        ``inter_temperature`` is fixed. Called by ``fit`` before tuning and optimiser creation.
        """
        cfg = self.config
        if cfg.heads:
            ensure_v2_heads(model, inter=cfg.inter_loss_weight > 0, mlm=cfg.mlm_loss_weight > 0)
        if cfg.inter_loss_weight > 0 and cfg.inter_temperature is not None:
            return (INTER_LOG_SCALE,)
        return ()

    def __call__(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Forward + losses for one :class:`glip.data.types.Batch` already on the model's device.

        model: a GLIP (or DDP-wrapped GLIP). With ``mlm_loss_weight > 0`` the captions are masked (BERT
        recipe, the global RNG) *before* the one forward, so the grounding loss, L_inter and L_mlm are all
        computed on the masked text (joint training, as GLIPv2); the grounding targets are unchanged.
        Returns scalar losses, already weighted: :data:`glip.losses.grounding.LOSS_KEYS`, plus
        ``loss_inter`` / ``loss_mlm`` when on.
        """
        cfg = self.config
        input_ids, mlm_labels, heads = batch.input_ids, None, cfg.heads
        if cfg.mlm_loss_weight > 0:
            bare = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
            mask_id, special = bert_special_ids()
            vocab = int(bare.config.text.bert["vocab_size"])
            input_ids, mlm_labels = mask_tokens(
                input_ids, batch.attention_mask, vocab, mask_id, special, cfg.mlm_probability
            )
        if heads:
            output = model(batch.images, input_ids, batch.attention_mask, v2=heads)
        else:
            output = model(batch.images, batch.input_ids, batch.attention_mask)
        losses, assignments = output_losses(
            output, batch.targets, topk=cfg.topk, reg_loss_weight=cfg.reg_loss_weight
        )
        if cfg.ground_loss_weight != 1.0:
            losses = {k: v * cfg.ground_loss_weight for k, v in losses.items()}
        if cfg.inter_loss_weight > 0:
            inter = inter_image_loss(
                output,
                batch.targets,
                [a.matched_gt for a in assignments],
                temperature=cfg.inter_temperature,
                gather=cfg.inter_gather,
            )
            losses["loss_inter"] = inter * cfg.inter_loss_weight
        if mlm_labels is not None:
            length = output.v2["mlm_logits"].shape[1]  # text trimmed to the longest caption
            losses["loss_mlm"] = (
                mlm_loss(output.v2["mlm_logits"], mlm_labels[:, :length]) * cfg.mlm_loss_weight
            )
        return losses

    def __repr__(self) -> str:
        return f"Criterion({self.config!r})"
