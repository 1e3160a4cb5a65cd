"""Feature pyramid: C3..C5 -> P3..P7 (official backbone/fpn.py with LastLevelP6P7, "SWINT-FPN-RETINANET").

The stride-4 stage is dropped; P6 is computed from P5 (the FPN output, not C5); P7 = conv(relu(P6)).
Plain convolutions with bias, no norm, no activation; nearest top-down upsampling to the lateral's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FPN(nn.Module):
    """in_channels: channels of C3, C4, C5; returns [P3, P4, P5, P6, P7] with ``out_channels`` each."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
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
            results.insert(0, self.output_convs[index](inner))
        p6 = self.p6(results[-1])
        p7 = self.p7(F.relu(p6))
        return [*results, p6, p7]
