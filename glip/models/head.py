"""The VL-DyHead: a tower of (fusion -> BERT layer -> DyConv) blocks and the ATSS predictors.

Official: maskrcnn_benchmark/modeling/rpn/vldyhead.py (VLDyHead, VLDyHeadModule). The grounding score
is ``S_ground = O . P^T``: region features O (not normalised) against projected, L2-normalised token
features P, divided by exp(log_scale), plus a per-token bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from glip.memory import stage_end
from glip.models.dyhead import DyConv
from glip.models.fusion import LOGIT_CLAMP, FusionBlock
from glip.models.language import TextLayer

# official USE_DOT_PRODUCT_TOKEN_LOSS: rpn.tunable_linear has 1000 rows (language_prompt_v2)
PROMPT_TUNING_ROWS = 1000


@dataclass
class HeadOutput:
    """Per-level raw head outputs (levels P3..P7).

    token_logits: L tensors (B, H_l*W_l, T) grounding logits S_ground (before sigmoid).
    box_regression: L tensors (B, 4, H_l, W_l) deltas (after the per-level scale).
    centerness: L tensors (B, 1, H_l, W_l) logits.
    fused_text: (B, T, D) text features after the tower (or the encoder's, for late fusion).
    features: L tensors (B, C, H_l, W_l), the tower output.
    """

    token_logits: list[torch.Tensor]
    box_regression: list[torch.Tensor]
    centerness: list[torch.Tensor]
    fused_text: torch.Tensor
    features: list[torch.Tensor]


class Scale(nn.Module):
    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([value]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class HeadBlock(nn.Module):
    """One tower layer: optional fusion (+ optional BERT layer on the text side), then DyConv."""

    def __init__(
        self,
        channels: int,
        text_dim: int,
        text_heads: int,
        text_intermediate: int,
        text_eps: float,
        text_dropout: float,
        fusion: bool,
        text_layer: bool,
        fusion_embed_dim: int,
        fusion_heads: int,
        fusion_dropout: float,
        layer_scale: float,
        use_deform: bool,
        use_dyfuse: bool,
        use_dyrelu: bool,
        gn_groups: int | None,
        use_checkpoint: bool,
    ) -> None:
        super().__init__()
        self.fusion = (
            FusionBlock(
                channels,
                text_dim,
                fusion_embed_dim,
                fusion_heads,
                fusion_dropout,
                layer_scale,
                use_checkpoint,
            )
            if fusion
            else None
        )
        self.text_layer = (
            TextLayer(
                text_dim,
                text_heads,
                text_intermediate,
                eps=text_eps,
                dropout=text_dropout,
                attn_dropout=text_dropout,
            )
            if text_layer
            else None
        )
        self.dyconv = DyConv(channels, channels, use_deform, use_dyfuse, use_dyrelu, gn_groups)

    def forward(
        self, features: list[torch.Tensor], text: torch.Tensor, text_mask: torch.Tensor, causal: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``causal=True``: causal BERT layer, and the fusion does not update the image (GLIPv2 captioning)."""
        if self.fusion is not None:
            features, text = self.fusion(features, text, text_mask, update_vision=not causal)
            stage_end()  # large no-grad CPU forwards return free heap pages here: glip/memory.py
        if self.text_layer is not None:
            text = self.text_layer(text, text_mask, causal=causal)
        features = self.dyconv(features)
        stage_end()
        return features, text


class VLDyHead(nn.Module):
    """The grounding head. See :class:`glip.config.HeadConfig` for the arguments."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_blocks: int,
        text_dim: int,
        text_heads: int,
        text_intermediate: int,
        text_eps: float = 1e-12,
        text_dropout: float = 0.1,
        deep_fusion: bool = True,
        fused_text_for_score: bool = True,
        fusion_embed_dim: int = 2048,
        fusion_heads: int = 8,
        fusion_dropout: float = 0.1,
        layer_scale: float = 1.0 / 6.0,
        use_deform: bool = True,
        use_dyfuse: bool = True,
        use_dyrelu: bool = True,
        gn_groups: int | None = 16,
        num_classes: int = 81,
        prior_prob: float = 0.01,
        log_scale_init: float = 0.0,
        num_levels: int = 5,
        prompt_tuning: bool = False,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if in_channels != channels:
            raise ValueError(
                "the DyHead tower needs FPN channels == head channels (as in every official config)"
            )
        self.deep_fusion = deep_fusion
        self.fused_text_for_score = fused_text_for_score and deep_fusion
        self.blocks = nn.ModuleList(
            HeadBlock(
                channels,
                text_dim,
                text_heads,
                text_intermediate,
                text_eps,
                text_dropout,
                fusion=deep_fusion,
                # official: a BERT layer follows every fusion, the last one only if its output is scored
                text_layer=deep_fusion and (i < num_blocks - 1 or fused_text_for_score),
                fusion_embed_dim=fusion_embed_dim,
                fusion_heads=fusion_heads,
                fusion_dropout=fusion_dropout,
                layer_scale=layer_scale,
                use_deform=use_deform,
                use_dyfuse=use_dyfuse,
                use_dyrelu=use_dyrelu,
                gn_groups=gn_groups,
                use_checkpoint=use_checkpoint,
            )
            for i in range(num_blocks)
        )
        # Vestigial class-weight classifier: kept (frozen) so official checkpoints load; unused for scores.
        self.cls_logits = nn.Conv2d(channels, num_classes - 1, kernel_size=1)
        self.bbox_pred = nn.Conv2d(channels, 4, kernel_size=1)
        self.centerness = nn.Conv2d(channels, 1, kernel_size=1)
        self.text_proj = nn.Linear(text_dim, channels)
        self.log_scale = nn.Parameter(torch.tensor([log_scale_init]))
        self.text_bias = nn.Parameter(torch.zeros(text_dim))
        bias_value = -math.log((1 - prior_prob) / prior_prob)
        self.bias0 = nn.Parameter(torch.tensor([bias_value]))
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        self.prompt_offset = (
            nn.Parameter(torch.zeros(PROMPT_TUNING_ROWS, text_dim)) if prompt_tuning else None
        )  # official rpn.tunable_linear.weight
        for conv in (self.cls_logits, self.bbox_pred, self.centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, 0.0)
        nn.init.constant_(self.cls_logits.bias, bias_value)
        for p in self.cls_logits.parameters():
            p.requires_grad_(False)

    def token_scores(self, features: list[torch.Tensor], text: torch.Tensor) -> list[torch.Tensor]:
        """Grounding logits S_ground per level.

        features: L maps (B, C, H_l, W_l); text: (B, T, D) -> L tensors (B, H_l*W_l, T).
        """
        text = F.normalize(text, p=2, dim=-1)
        proj = self.text_proj(text / 2.0)  # (B, T, C)
        bias = text @ self.text_bias + self.bias0  # (B, T)
        scale = self.log_scale.exp()
        logits = []
        for feature in features:
            queries = feature.flatten(2).transpose(
                1, 2
            )  # (B, HW, C), not normalised (official Identity proj)
            logit = queries @ proj.transpose(-1, -2) / scale + bias[:, None, :]  # (B, HW, T)
            logits.append(logit.clamp(-LOGIT_CLAMP, LOGIT_CLAMP))
        return logits

    def forward(
        self,
        features: list[torch.Tensor],
        hidden: torch.Tensor,
        embedded: torch.Tensor,
        mask: torch.Tensor,
        causal: bool = False,
    ) -> HeadOutput:
        """features: L FPN maps (B, C, H_l, W_l); hidden/embedded: (B, T, D) text; mask: (B, T).

        ``causal=True`` (GLIPv2 captioning): the in-head BERT layers attend causally and the fusion blocks do
        not update the image features, so box regression / centerness / tower features do not depend on the
        text, and token t's logits depend only on tokens <= t.
        """
        if self.prompt_offset is not None:
            offset = self.prompt_offset[: hidden.shape[1]][None]  # (1, T, D)
            hidden = hidden + offset
            embedded = embedded + offset
        text = hidden
        for block in self.blocks:
            features, text = block(features, text, mask, causal=causal)
        score_text = text if self.fused_text_for_score else embedded
        return HeadOutput(
            token_logits=self.token_scores(features, score_text),
            box_regression=[scale(self.bbox_pred(f)) for scale, f in zip(self.scales, features)],
            centerness=[self.centerness(f) for f in features],
            fused_text=score_text,
            features=features,
        )
