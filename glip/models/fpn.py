"""Feature pyramid: C3..C5 -> P3..P7 (official backbone/fpn.py with LastLevelP6P7, "SWINT-FPN-RETINANET").

The stride-4 stage is dropped; P6 is computed from P5 (the FPN output, not C5); P7 = conv(relu(P6)).
Plain convolutions with bias, no norm, no activation; nearest top-down upsampling to the lateral's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropBlock2d(nn.Module):
    """DropBlock (Ghiasi et al. 2018): drop ``size`` x ``size`` blocks, rescale the kept activations."""

    def __init__(self, prob: float, size: int) -> None:
        super().__init__()
        self.prob, self.size = prob, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.prob <= 0:
            return x
        gamma = self.prob / self.size**2
        seeds = (torch.rand(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device) < gamma).to(x.dtype)
        block = F.max_pool2d(seeds, self.size, stride=1, padding=self.size // 2)[
            ..., : x.shape[2], : x.shape[3]
        ]
        keep = 1 - block
        return x * keep * (keep.numel() / keep.sum().clamp(min=1.0))


class FPN(nn.Module):
    """in_channels: channels of C3, C4, C5; returns [P3, P4, P5, P6, P7] with ``out_channels`` each."""

    def __init__(
        self,
        in_channels: tuple[int, ...],
        out_channels: int,
        drop_block_prob: float = 0.0,
        drop_block_size: int = 3,
    ) -> None:
        super().__init__()
        # official MODEL.FPN.DROP_BLOCK (on by default, prob 0.3, size 3): training only, on the merged
        # top-down features of every level but the top one, before the 3x3 output conv.
        self.drop_block = DropBlock2d(drop_block_prob, drop_block_size) if drop_block_prob > 0 else None
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels
        )
        self.p6 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        for conv in [*self.lateral_convs, *self.output_convs, self.p6, self.p7]:
            # official conv_with_kaiming_uniform / LastLevelP6P7 init
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """features: [C3, C4, C5] (B, C_i, H_i, W_i) -> [P3..P7] (B, out, H_l, W_l), strides 8..128."""
        inner = self.lateral_convs[-1](features[-1])
        results = [self.output_convs[-1](inner)]
        for index in range(len(features) - 2, -1, -1):
            lateral = self.lateral_convs[index](features[index])
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            dropped = self.drop_block(inner) if self.drop_block is not None and self.training else inner
            results.insert(0, self.output_convs[index](dropped))
        p6 = self.p6(results[-1])
        p7 = self.p7(F.relu(p6))
        return [*results, p6, p7]
