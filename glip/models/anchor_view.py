"""One GLIP forward seen anchor by anchor: what the GLIPv2 task heads (VQA, captioning) read from the image.

The head's outputs come per level (P3..P7); the task heads want them as one sequence of A = sum_l H_l*W_l
anchors, in the order of ``token_logits`` (level by level, row-major inside a level):

    features     (B, C, H_l, W_l) x L  -> (B, A, C)   the tower's image features (after fusion)
    fpn          (B, F, H_l, W_l) x L  -> (B, A, F)   the FPN's (before fusion: the backbone's view)
    token_logits (B, H_l*W_l, T) x L   -> (B, A, T)   S_ground, the region-token grounding logits
    centerness   (B, 1, H_l, W_l) x L  -> (B, A)      logits
    anchors      (H_l*W_l, 4) x L      -> centres (B, A, 2): (x, y) / each image's unpadded (W, H), in [0, 1]

so a head can pool image features where the text grounds ("grounded" VQA / captioning) and know where they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from glip.models.glip import GLIPOutput

__all__ = ["AnchorView", "anchor_view", "attend_to_anchors"]


@dataclass
class AnchorView:
    """features (B, A, C); fpn (B, A, F); token_logits (B, A, T); centerness (B, A); centres (B, A, 2) in
    [0, 1]; level_sizes: anchors per level (sum = A)."""

    features: torch.Tensor
    fpn: torch.Tensor
    token_logits: torch.Tensor
    centerness: torch.Tensor
    centres: torch.Tensor
    level_sizes: tuple[int, ...]


def anchor_view(output: GLIPOutput) -> AnchorView:
    """The per-level head outputs of ``output`` flattened to anchors (see the module docstring)."""
    head = output.head
    features = torch.cat([f.flatten(2).transpose(1, 2) for f in head.features], dim=1)
    fpn = torch.cat([f.flatten(2).transpose(1, 2) for f in output.fpn], dim=1)
    logits = torch.cat(head.token_logits, dim=1)
    centerness = torch.cat([c.flatten(1) for c in head.centerness], dim=1)
    anchors = torch.cat(output.anchors, dim=0).to(features.dtype)  # (A, 4) xyxy, input frame
    centre = (anchors[:, :2] + anchors[:, 2:]) / 2  # (A, 2)
    sizes = torch.tensor(
        [[w, h] for h, w in output.image_sizes], dtype=features.dtype, device=features.device
    )  # (B, 2)
    centres = (centre[None] / sizes[:, None]).clamp(0.0, 1.0)
    return AnchorView(
        features, fpn, logits, centerness, centres, tuple(int(f.shape[2] * f.shape[3]) for f in head.features)
    )


def attend_to_anchors(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int, bias: torch.Tensor
) -> torch.Tensor:
    """Multi-head attention from text queries to the anchors, with an additive bias on its logits.

    query: (B, Tq, W); key / value: (B, A, W), W = heads * d; bias: broadcastable to (B, heads, Tq, A)
    -> (B, Tq, W). Shared by the VQA head (Tq = 1, bias from S_ground) and the captioning head (every text
    position, bias from where the last mentioned object lies).
    """
    batch, width = query.shape[0], query.shape[-1]
    head_dim = width // heads
    split = (batch, -1, heads, head_dim)
    query, key, value = (x.view(split).transpose(1, 2) for x in (query, key, value))  # (B, H, ., d)
    attention = (query @ key.transpose(-1, -2) / head_dim**0.5 + bias).softmax(dim=-1)  # (B, H, Tq, A)
    return (attention @ value).transpose(1, 2).reshape(batch, -1, width)
