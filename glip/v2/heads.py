"""The GLIPv2 pre-training heads a GLIP model owns: ``GLIP.v2_heads``, an ``nn.ModuleDict`` (None by default).

    "inter": :class:`glip.v2.contrastive.InterContrastiveHead` (``GLIPConfig.v2.inter_dim > 0``)
    "mlm":   :class:`glip.v2.mlm.MLMHead`, tied to the text encoder's word embeddings (``GLIPConfig.v2.mlm_head``)

:func:`glip.models.glip.build_model` creates them when the config asks, so they are saved, loaded (strictly) and
optimised with the model; configs without them (every preset, every official checkpoint) are unchanged.
:func:`ensure_v2_heads` adds missing heads to an existing model (what ``fit`` does when a loss weight asks for
a head the model lacks) and records them in ``model.config``. The heads run inside ``GLIP.forward(..., v2=...)``
so that DDP sees their parameters used in the forward.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import torch
from torch import nn

from glip.config import GLIPConfig
from glip.v2.contrastive import InterContrastiveHead
from glip.v2.mlm import MLMHead

logger = logging.getLogger(__name__)

__all__ = ["V2_HEADS", "build_v2_heads", "ensure_v2_heads", "forward_v2_heads"]

V2_HEADS = ("inter", "mlm")


def _build_head(name: str, config: GLIPConfig) -> nn.Module:
    bert = config.text.bert
    text_dim = int(bert["hidden_size"])
    if name == "inter":
        return InterContrastiveHead(
            config.fpn_channels, text_dim, config.v2.inter_dim, config.v2.inter_temperature
        )
    return MLMHead(text_dim, int(bert["vocab_size"]), eps=float(bert.get("layer_norm_eps", 1e-12)), tied=True)


def build_v2_heads(config: GLIPConfig) -> nn.ModuleDict:
    """The heads ``config.v2`` asks for (possibly none)."""
    wanted = [n for n, on in (("inter", config.v2.inter_dim > 0), ("mlm", config.v2.mlm_head)) if on]
    return nn.ModuleDict({name: _build_head(name, config) for name in wanted})


def ensure_v2_heads(
    model: nn.Module, inter: bool = False, mlm: bool = False, inter_dim: int | None = None
) -> list[str]:
    """Give ``model`` (a GLIP) the requested heads it lacks, freshly initialised, on the model's device.

    ``inter_dim``: width of a new L_inter head (default: the FPN channels). Updates ``model.config.v2`` so
    that ``save_model`` / ``load_model`` rebuild them. Returns the names of the heads added.
    """
    config: GLIPConfig = model.config  # type: ignore[assignment]
    v2 = config.v2
    if inter and v2.inter_dim <= 0:
        v2 = dataclasses.replace(v2, inter_dim=int(inter_dim or config.fpn_channels))
    if mlm and not v2.mlm_head:
        v2 = dataclasses.replace(v2, mlm_head=True)
    new_config = dataclasses.replace(config, v2=v2)
    heads = model.v2_heads if model.v2_heads is not None else nn.ModuleDict()  # type: ignore[union-attr]
    added = []
    device = next(model.parameters()).device
    for name, on in (("inter", inter), ("mlm", mlm)):
        if on and name not in heads:
            heads[name] = _build_head(name, new_config).to(device)
            added.append(name)
    if added:
        model.v2_heads = heads
        model.config = new_config
        logger.info("added GLIPv2 head(s) %s to the model (freshly initialised)", ", ".join(added))
    return added


def forward_v2_heads(
    model: nn.Module,
    fpn: Sequence[torch.Tensor],
    text,  # noqa: ANN001 - glip.models.language.TextFeatures
    head,  # noqa: ANN001 - glip.models.head.HeadOutput
    names: Sequence[str],
) -> dict[str, torch.Tensor]:
    """Run the named heads of ``model.v2_heads``.

    Outputs: ``inter_regions`` (B, A, d) projected FPN features at every anchor (before fusion),
    ``inter_words`` (B, T, d) projected text encoder output (before fusion), ``inter_logit_scale`` () 1 / T;
    ``mlm_logits`` (B, T, V) from the fused text.
    """
    heads = model.v2_heads
    out: dict[str, torch.Tensor] = {}
    for name in names:
        if name not in V2_HEADS:
            raise ValueError(f"unknown GLIPv2 head {name!r}; known: {', '.join(V2_HEADS)}")
        if heads is None or name not in heads:
            flag = "v2.inter_dim > 0" if name == "inter" else "v2.mlm_head=True"
            raise ValueError(
                f"the model has no GLIPv2 {name!r} head: build it with GLIPConfig {flag} "
                "(fit adds it when the matching loss weight is > 0)"
            )
    if "inter" in names:
        inter = heads["inter"]
        out["inter_regions"] = inter.project_regions(fpn)
        out["inter_words"] = inter.project_words(text.hidden)
        out["inter_logit_scale"] = inter.logit_scale()
    if "mlm" in names:
        embeddings = model.text_encoder.bert.embeddings.word_embeddings.weight
        out["mlm_logits"] = heads["mlm"](head.fused_text, embeddings)
    return out
