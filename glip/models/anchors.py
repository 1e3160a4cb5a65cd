"""One square anchor per location per pyramid level, with the Detectron legacy "+1" conventions.

Official: maskrcnn_benchmark/modeling/rpn/anchor_generator.py (make_anchor_generator_complex,
generate_anchors with a base window [0, 0, stride-1, stride-1]). The cell anchors are buffers, saved in
the checkpoint as ``rpn.anchor_generator.cell_anchors.{l}``.
"""

from __future__ import annotations

import torch
from torch import nn


def legacy_cell_anchor(stride: int, size: float) -> torch.Tensor:
    """The single aspect-1 anchor for one level, shape (1, 4) xyxy, e.g. stride 8 size 64 -> [-28, -28, 35, 35]."""
    # base window [0, 0, stride - 1, stride - 1] has centre (stride - 1) / 2; widths use "+1"
    center = 0.5 * (stride - 1)
    # ratio 1: ws = hs = round(sqrt(stride * stride / 1)) = stride, then scaled to `size`
    half = 0.5 * (size - 1)
    return torch.tensor([[center - half, center - half, center + half, center + half]], dtype=torch.float32)


class AnchorGenerator(nn.Module):
    """Anchors for every location of every level, in official order (level, then row-major y, x)."""

    def __init__(self, sizes: tuple[int, ...], strides: tuple[int, ...]) -> None:
        super().__init__()
        if len(sizes) != len(strides):
            raise ValueError("one anchor size per stride is required")
        self.strides = tuple(strides)
        self.cell_anchors = _BufferList([legacy_cell_anchor(s, z) for s, z in zip(strides, sizes)])

    def grid_anchors(self, sizes_hw: list[tuple[int, int]]) -> list[torch.Tensor]:
        """sizes_hw: (H_l, W_l) per level -> per level (H_l * W_l, 4) xyxy anchors in input pixels."""
        anchors = []
        for (height, width), stride, base in zip(sizes_hw, self.strides, self.cell_anchors):
            shifts_x = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=base.device)
            shifts_y = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=base.device)
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)  # (HW, 4)
            anchors.append((shifts[:, None, :] + base[None, :, :]).reshape(-1, 4))
        return anchors

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """features: L maps (B, C, H_l, W_l) -> L tensors (H_l * W_l, 4) (same for every image)."""
        return self.grid_anchors([(int(f.shape[-2]), int(f.shape[-1])) for f in features])


class _BufferList(nn.Module):
    """Holds tensors as buffers named 0..n-1 (so they appear as ``cell_anchors.{i}`` in the state dict)."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        super().__init__()
        for index, tensor in enumerate(tensors):
            self.register_buffer(str(index), tensor)

    def __len__(self) -> int:
        return len(self._buffers)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._buffers.values())
