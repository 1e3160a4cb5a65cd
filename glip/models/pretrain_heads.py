"""The GLIPv2 pre-training heads a GLIP model owns: ``GLIP.v2_heads``, an ``nn.ModuleDict`` (None by default).

    "inter": :class:`InterContrastiveHead`, the projections and temperature of L_inter
             (``GLIPConfig.v2.inter_dim > 0``; the loss: :mod:`glip.losses.contrastive`)
    "mlm":   :class:`MLMHead`, tied to the text encoder's word embeddings (``GLIPConfig.v2.mlm_head``;
             the loss and BERT masking: :mod:`glip.losses.mlm`)

MLM head (GLIPv2: "a two-layer MLP on the text features P" after fusion):

    fused text (B, T, D) --Linear(D, D)--> GELU --LayerNorm--> (B, T, D)
                         --x word_embeddings^T + bias--> logits (B, T, V)

The decoder is tied to the text encoder's input word embeddings (V, D) as in BERT; a head built with
``tied=False`` owns its decoder instead (for text encoders whose embeddings do not have width D).

:func:`glip.models.glip.build_model` creates them when the config asks, so they are saved, loaded (strictly) and
optimised with the model; configs without them (every preset, every official checkpoint) are unchanged.
:func:`ensure_v2_heads` adds missing heads to an existing model (what ``fit`` does, through the criterion, when a
loss weight asks for a head the model lacks) and records them in ``model.config``. The heads run inside
``GLIP.forward(..., v2=...)`` so that DDP sees their parameters used in the forward.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from glip.config import GLIPConfig

logger = logging.getLogger(__name__)

__all__ = [
    "INIT_TEMPERATURE",
    "MAX_LOGIT_SCALE",
    "V2_HEADS",
    "InterContrastiveHead",
    "MLMHead",
    "build_v2_heads",
    "ensure_v2_heads",
    "forward_v2_heads",
]

V2_HEADS = ("inter", "mlm")
INIT_TEMPERATURE = 0.07  # CLIP / MDETR's contrastive temperature
MAX_LOGIT_SCALE = 100.0  # CLIP's clamp of the learnable 1 / temperature: keeps the logits bounded


class InterContrastiveHead(nn.Module):
    """Projection heads of L_inter and its temperature.

    region_dim: FPN channels C; text_dim: text encoder width D; dim: shared width d.
    The temperature is stored as ``log_scale = log(1 / temperature)`` (learnable; a fixed temperature is set
    at training time, see ``CriterionConfig.inter_temperature``).
    """

    def __init__(
        self, region_dim: int, text_dim: int, dim: int, temperature: float = INIT_TEMPERATURE
    ) -> None:
        super().__init__()
        if dim <= 0 or temperature <= 0:
            raise ValueError(f"L_inter head needs dim > 0 and temperature > 0, got {dim} and {temperature}")
        self.region_proj = nn.Linear(region_dim, dim)
        self.word_proj = nn.Linear(text_dim, dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def project_regions(self, fpn: Sequence[torch.Tensor]) -> torch.Tensor:
        """fpn: L maps (B, C, H_l, W_l) -> (B, A, d), anchors in the official order (levels, then row-major)."""
        flat = torch.cat([f.flatten(2).transpose(1, 2) for f in fpn], dim=1)  # (B, A, C)
        return self.region_proj(flat)

    def project_words(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, T, D) text encoder output -> (B, T, d)."""
        return self.word_proj(hidden)

    def logit_scale(self) -> torch.Tensor:
        """1 / temperature, a scalar tensor (clamped to :data:`MAX_LOGIT_SCALE`)."""
        return self.log_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()


class MLMHead(nn.Module):
    """Two-layer MLP (dense + GELU + LayerNorm, then the vocabulary decoder). hidden: D; vocab_size: V."""

    def __init__(self, hidden: int, vocab_size: int, eps: float = 1e-12, tied: bool = True) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.decoder = None if tied else nn.Linear(hidden, vocab_size, bias=False)

    def forward(self, text: torch.Tensor, word_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """text: (B, T, D) fused text features; word_embeddings: (V, D), needed when tied -> logits (B, T, V)."""
        hidden = self.norm(F.gelu(self.dense(text)))
        if self.decoder is not None:
            return self.decoder(hidden) + self.bias
        if word_embeddings is None:
            raise ValueError("a tied MLM head needs the text encoder's word embeddings (V, D)")
        if word_embeddings.shape != (self.bias.shape[0], hidden.shape[-1]):
            raise ValueError(
                f"word embeddings of shape {tuple(word_embeddings.shape)} do not fit a tied MLM head of width "
                f"{hidden.shape[-1]} and vocabulary {self.bias.shape[0]}"
            )
        return hidden @ word_embeddings.t() + self.bias


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
