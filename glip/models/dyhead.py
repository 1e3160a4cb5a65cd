"""Vision blocks of the DyHead tower: modulated deformable 3x3 conv + GroupNorm, scale-aware attention, DyReLU.

Official: maskrcnn_benchmark/modeling/rpn/vldyhead.py (Conv3x3Norm, DyConv, h_sigmoid) and
maskrcnn_benchmark/layers/dyrelu.py (DYReLU). Deformable convolution runs through
``torchvision.ops.deform_conv2d`` or an equivalent path of our own (a weighted gather of channel vectors on CPU,
``grid_sample`` on accelerators and in exports), never a compiled extension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from glip.memory import in_place

# the CPU paths (gather, grid_sample) sample at most about this many values of the columns at once
DEFORM_COLUMNS_MAX_ELEMENTS = 1 << 22


def h_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Hard sigmoid ``relu6(x + 3) / 6`` (official vldyhead.py h_sigmoid)."""
    return F.relu6(x + 3.0) / 6.0


def reinterpret_offsets(tensor: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Fit per-location offsets/masks ``(B, K, H, W)`` to a conv output of size ``out_hw``.

    Official quirk (rpn/vldyhead.py DyConv + csrc/cuda/deform_conv_cuda.cu): the offsets computed at
    level l are also given to the conv applied to the coarser level l+1, whose output is smaller. The
    CUDA kernel does no shape check and reads, per image, the first ``K * Ho * Wo`` values of the flat
    offset tensor with the output's strides. We reproduce that exactly (not a crop, not a resize).
    """
    batch, channels, height, width = tensor.shape
    out_h, out_w = out_hw
    needed = channels * out_h * out_w
    if not torch.compiler.is_exporting():  # no shape guards while exporting (symbolic sizes: slow to prove)
        if (height, width) == (out_h, out_w):
            return tensor
        if needed > channels * height * width:
            raise ValueError(f"offsets of size {(height, width)} cannot drive a conv output of size {out_hw}")
    return tensor.reshape(batch, -1)[:, :needed].reshape(batch, channels, out_h, out_w)


def tap_positions(
    offset: torch.Tensor, stride: int, dtype: torch.dtype, shift: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a modulated deformable 3x3 conv (padding 1, dilation 1) samples: the absolute positions (pixels of
    its input map, moved by ``shift``) of tap k = i * 3 + j (row-major) at every output position, with the
    offset channels read as (dy, dx) per tap, as ``torchvision.ops.deform_conv2d`` reads them.
    offset: (B, 18, Ho, Wo) -> pos_y, pos_x: (B, 9, Ho, Wo) each, of ``dtype`` or wider (the input map's
    dtype: under autocast the offsets may be narrower than the map they sample)."""
    out_h, out_w = offset.shape[-2:]
    device = offset.device
    base_y = torch.arange(out_h, device=device, dtype=dtype) * stride - 1 + shift  # top-left tap, padding 1
    base_x = torch.arange(out_w, device=device, dtype=dtype) * stride - 1 + shift
    taps = torch.arange(3, device=device, dtype=dtype)
    tap_y = taps[:, None].expand(3, 3).reshape(9)[None, :, None, None]
    tap_x = taps[None, :].expand(3, 3).reshape(9)[None, :, None, None]
    return base_y[None, None, :, None] + tap_y + offset[:, 0::2], base_x[
        None, None, None, :
    ] + tap_x + offset[:, 1::2]


def deform_conv3x3_grid_sample(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
) -> torch.Tensor:
    """Modulated deformable 3x3 conv (padding 1, dilation 1) via ``grid_sample`` + one matmul.

    Same maths as ``torchvision.ops.deform_conv2d`` (bilinear sampling, zero outside the map, offset
    channels (dy, dx) per tap in row-major tap order) but much faster on CPU.
    x: (B, C, H, W); offset: (B, 18, Ho, Wo); mask: (B, 9, Ho, Wo); weight: (O, C, 3, 3) -> (B, O, Ho, Wo).
    """
    batch, channels = x.shape[:2]
    out_h, out_w = offset.shape[-2:]
    device = x.device
    pad = 0
    if x.shape[-2] < 2 or x.shape[-1] < 2:
        # grid_sample(align_corners=True) cannot address a size-1 axis: pad one zero pixel all around
        # (sampling between -1 and 0 then blends with zero inside the map, as the deformable kernel does).
        x = F.pad(x, (1, 1, 1, 1))
        pad = 1
    height, width = x.shape[-2:]
    pos_y, pos_x = tap_positions(offset, stride, x.dtype, shift=pad)  # (B, 9, Ho, Wo) each
    # normalise for grid_sample(align_corners=True): -1 -> pixel 0, +1 -> pixel size-1; outside -> zeros
    grid_x = pos_x * (2.0 / (width - 1)) - 1.0
    grid_y = pos_y * (2.0 / (height - 1)) - 1.0
    grid = torch.stack((grid_x, grid_y), dim=-1)  # (B, 9, Ho, Wo, 2)
    weight_2d = weight.reshape(weight.shape[0], -1)  # (O, C*9)
    # On CPU, large maps go in bands of output rows, so the (B, C*9, Ho*Wo) sampled columns never exist at
    # once (bands are also faster there: they stay in cache); on an accelerator, and while exporting (where
    # the sizes are symbolic), one band without slicing or torch.cat.
    banded = device.type == "cpu" and not torch.compiler.is_exporting()
    rows = out_h
    if banded:
        rows = max(1, min(out_h, DEFORM_COLUMNS_MAX_ELEMENTS // max(1, batch * channels * 9 * out_w)))

    def columns(grid_rows: torch.Tensor, mask_rows: torch.Tensor, band: int) -> torch.Tensor:
        """(B, C*9, band*Wo): the modulated samples of ``band`` output rows (their grid and mask rows)."""
        sampled = F.grid_sample(
            x,
            grid_rows.reshape(batch, 9 * band, out_w, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )
        sampled = sampled.view(batch, channels, 9, band, out_w).mul_(mask_rows[:, None])
        return sampled.reshape(batch, channels * 9, band * out_w)

    buffered = False
    if not banded or rows >= out_h:
        out = weight_2d @ columns(grid, mask, out_h)
    else:
        # CPU inference: each band's product is copied into one output buffer as soon as it exists (no list
        # of bands, no torch.cat; the same product either way: matmul's out= would take another GEMM path for
        # a batch of several images, which rounds differently)
        buffered = in_place(x, weight_2d)
        out = x.new_empty(batch, weight_2d.shape[0], out_h * out_w) if buffered else None
        bands = []
        for top in range(0, out_h, rows):
            band = min(rows, out_h - top)
            product = weight_2d @ columns(grid[:, :, top : top + band], mask[:, :, top : top + band], band)
            if out is not None:
                out[:, :, top * out_w : (top + band) * out_w] = product
            else:
                bands.append(product)
        if out is None:
            out = torch.cat(bands, dim=-1)
    if bias is not None:
        # in place only into the band buffer (row-major strides): a matmul's result can have other strides
        # (a transposed view for a batch, odd strides on size-1 axes), which an in-place add would keep and
        # an out-of-place add does not; GroupNorm then takes another kernel, which rounds differently
        out = out.add_(bias[None, :, None]) if buffered else out + bias[None, :, None]
    return out.reshape(batch, -1, out_h, out_w)


def _bilinear_neighbours(
    pos_y: torch.Tensor, pos_x: torch.Tensor, mask: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4 neighbours of sampling points in a (height, width) map: flat indices ``y * width + x`` and
    bilinear weights times ``mask``, each (..., 4); a neighbour outside the map weighs 0 (its index is
    clamped into the map), which is the deformable kernel's zero padding."""
    y0, x0 = pos_y.floor(), pos_x.floor()
    ly, lx = pos_y - y0, pos_x - x0
    hy, hx = 1.0 - ly, 1.0 - lx
    weights = torch.stack((hy * hx, hy * lx, ly * hx, ly * lx), dim=-1) * mask[..., None]
    y0, x0 = y0.to(torch.long), x0.to(torch.long)
    ys = torch.stack((y0, y0, y0 + 1, y0 + 1), dim=-1)
    xs = torch.stack((x0, x0 + 1, x0, x0 + 1), dim=-1)
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    weights = weights * inside
    index = ys.clamp(0, height - 1) * width + xs.clamp(0, width - 1)
    return index, weights


def deform_conv3x3_gather(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
) -> torch.Tensor:
    """Modulated deformable 3x3 conv (padding 1, dilation 1) as a weighted gather of channel vectors + matmul.

    The CPU path. Same maths as ``torchvision.ops.deform_conv2d`` and :func:`deform_conv3x3_grid_sample`,
    laid out for the CPU: the map is read channels-last, so each sampling point blends 4 contiguous rows of
    C values (``F.embedding_bag`` with per-sample weights: one fused gather-and-sum; the bilinear weights
    carry the modulation mask), where ``grid_sample`` gathers one channel plane at a time. The columns come
    out position-major, (B, Ho*Wo, 9*C), and the matmul reads them transposed. Large maps go in bands of
    output rows (at most :data:`DEFORM_COLUMNS_MAX_ELEMENTS` column values at once), each band's product
    written into one output buffer.
    x: (B, C, H, W); offset: (B, 18, Ho, Wo); mask: (B, 9, Ho, Wo); weight: (O, C, 3, 3) -> (B, O, Ho, Wo).
    """
    batch, channels, height, width = x.shape
    out_h, out_w = offset.shape[-2:]
    device = x.device
    # channels-last rows (a copy: embedding_bag is fast only over contiguous rows; for one image a reshape
    # alone would be a transposed view)
    table = x.permute(0, 2, 3, 1).contiguous().view(batch * height * width, channels)
    # sampling positions per output position and tap, position-major: (B, Ho, Wo, 9)
    pos_y, pos_x = (pos.permute(0, 2, 3, 1) for pos in tap_positions(offset, stride, x.dtype))
    index, weights = _bilinear_neighbours(pos_y, pos_x, mask.permute(0, 2, 3, 1), height, width)
    index, weights = index.contiguous(), weights.contiguous()  # position-major memory: bands are plain slices
    index = index + (torch.arange(batch, device=device) * (height * width))[:, None, None, None, None]
    # (O, 9*C) in the columns' order: tap-major, channel-minor
    weight_2d = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], 9 * channels)
    rows = max(1, min(out_h, DEFORM_COLUMNS_MAX_ELEMENTS // max(1, batch * channels * 9 * out_w)))

    def product(top: int, band: int) -> torch.Tensor:
        """(B, O, band*Wo): the conv's output for ``band`` output rows from ``top``."""
        columns = F.embedding_bag(
            index[:, top : top + band].reshape(-1, 4),
            table,
            per_sample_weights=weights[:, top : top + band].reshape(-1, 4),
            mode="sum",
        )  # (B*band*Wo*9, C)
        return weight_2d @ columns.view(batch, band * out_w, 9 * channels).transpose(1, 2)

    if batch == 1 and rows >= out_h:
        out = product(0, out_h)
    else:
        # one row-major buffer (a batch's product is a transposed view: the matmul folds the images into rows)
        out = x.new_empty(batch, weight_2d.shape[0], out_h * out_w)
        for top in range(0, out_h, rows):
            band = min(rows, out_h - top)
            out[:, :, top * out_w : (top + band) * out_w] = product(top, band)
    if bias is not None:
        out = out + bias[None, :, None]
    return out.reshape(batch, -1, out_h, out_w)


class ConvNorm(nn.Module):
    """3x3 conv (modulated deformable when ``deformable``) followed by GroupNorm (official Conv3x3Norm)."""

    # "auto": deform_conv3x3_gather on CPU (fastest there), deform_conv3x3_grid_sample on accelerators and while
    # exporting (ONNX GridSample); "gather", "grid_sample" or "torchvision" (the reference kernel) force one.
    # All give the same result within float error (tested).
    deform_impl: str = "auto"

    def __init__(self, in_ch: int, out_ch: int, stride: int, deformable: bool, gn_groups: int | None) -> None:
        super().__init__()
        self.stride = stride
        self.deformable = deformable
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)
        self.bn = nn.GroupNorm(gn_groups, out_ch) if gn_groups else None

    def forward(
        self, x: torch.Tensor, offset: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.deformable and offset is not None and mask is not None:
            if not torch.compiler.is_exporting():  # while exporting, DyConv fits the offsets (no size guards)
                out_hw = ((x.shape[-2] - 1) // self.stride + 1, (x.shape[-1] - 1) // self.stride + 1)
                offset = reinterpret_offsets(offset, out_hw)
                mask = reinterpret_offsets(mask, out_hw)
            impl = self.deform_impl
            if impl == "auto":
                gather = x.device.type == "cpu" and not torch.compiler.is_exporting()
                impl = "gather" if gather else "grid_sample"
            if impl == "torchvision" or x.dtype != torch.float32:
                y = deform_conv2d(
                    x, offset, self.conv.weight, self.conv.bias, stride=self.stride, padding=1, mask=mask
                )
            elif impl == "gather":
                y = deform_conv3x3_gather(x, offset, mask, self.conv.weight, self.conv.bias, self.stride)
            else:
                y = deform_conv3x3_grid_sample(x, offset, mask, self.conv.weight, self.conv.bias, self.stride)
        else:
            y = self.conv(x)
        return self.bn(y) if self.bn is not None else y


class DyReLU(nn.Module):
    """Dynamic ReLU with 4 coefficients: ``max(x*a1 + b1, x*a2 + b2)`` (official layers/dyrelu.py DYReLU)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.channels = channels
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels * 4),
        )

    def forward(self, x: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W). ``overwrite``: ``x`` is the caller's to reuse (CPU inference then
        computes the second branch in it)."""
        coeffs = h_sigmoid(self.fc(x.mean(dim=(2, 3))))[:, :, None, None]  # (B, 4C, 1, 1)
        a1, b1, a2, b2 = torch.split(coeffs, self.channels, dim=1)
        a1 = (a1 - 0.5) * 2.0 + 1.0  # lambda_a = 2 * 1.0, init_a = (1, 0), init_b = (0, 0)
        a2 = (a2 - 0.5) * 2.0
        b1 = b1 - 0.5
        b2 = b2 - 0.5
        if in_place(x, coeffs):  # CPU inference: one or two large tensors instead of five (the same bits)
            first = torch.mul(x, a1).add_(b1)
            second = x.mul_(a2) if overwrite else torch.mul(x, a2)
            return torch.maximum(first, second.add_(b2), out=first)
        return torch.maximum(x * a1 + b1, x * a2 + b2)


class DyConv(nn.Module):
    """One DyHead vision block over all pyramid levels (official vldyhead.py DyConv).

    For level l: mean over {conv_same(x_l), conv_finer(x_{l-1}) (stride 2), up(conv_coarser(x_{l+1}))},
    each term weighted by a scale-aware attention; then DyReLU. Deformable offsets come from level l.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        use_deform: bool = True,
        use_dyfuse: bool = True,
        use_dyrelu: bool = True,
        gn_groups: int | None = 16,
    ) -> None:
        super().__init__()
        self.conv_coarser = ConvNorm(in_ch, out_ch, 1, use_deform, gn_groups)
        self.conv_same = ConvNorm(in_ch, out_ch, 1, use_deform, gn_groups)
        self.conv_finer = ConvNorm(in_ch, out_ch, 2, use_deform, gn_groups)
        self.scale_attn = nn.Conv2d(in_ch, 1, kernel_size=1) if use_dyfuse else None
        self.dyrelu = DyReLU(in_ch) if use_dyrelu else None
        self.offset = nn.Conv2d(in_ch, 27, kernel_size=3, stride=1, padding=1) if use_deform else None
        self._init_weights()

    def _init_weights(self) -> None:
        # official DyConv.init_weights: N(0, 0.01) convs with zero bias; offset conv zero-initialised.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.offset is not None:
            nn.init.zeros_(self.offset.weight)
            nn.init.zeros_(self.offset.bias)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        assert self.scale_attn is not None
        return h_sigmoid(F.relu(self.scale_attn(x.mean(dim=(2, 3), keepdim=True))))  # (B, 1, 1, 1)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """features: L maps (B, C, H_l, W_l) -> L maps (B, C_out, H_l, W_l)."""
        outputs = []
        for level, feature in enumerate(features):
            offset = mask = None
            if self.offset is not None:
                offset_mask = self.offset(feature)  # (B, 27, H, W)
                offset, mask = offset_mask[:, :18], offset_mask[:, 18:].sigmoid()
            terms = [self.conv_same(feature, offset, mask)]
            if level > 0:
                terms.append(self.conv_finer(features[level - 1], offset, mask))
            if level < len(features) - 1:
                coarse_offset, coarse_mask = offset, mask
                if offset is not None and mask is not None:
                    # only this conv (stride 1 on the coarser level) is fed offsets of another level's size:
                    # fitted here from the coarser map's size, so ConvNorm finds them the right size (and, while
                    # exporting, needs no size guards of its own: the same-level and finer convs' outputs have
                    # this level's size, every level being the stride-2 size of the one before)
                    size = features[level + 1].shape[-2:]
                    coarse_offset = reinterpret_offsets(offset, size)
                    coarse_mask = reinterpret_offsets(mask, size)
                coarser = self.conv_coarser(features[level + 1], coarse_offset, coarse_mask)
                # official F.upsample_bilinear == bilinear with align_corners=True
                terms.append(
                    F.interpolate(coarser, size=feature.shape[-2:], mode="bilinear", align_corners=True)
                )
            # mean over the terms, each weighted by its scale-aware attention (official: stack, mul, mean)
            total = None
            for term in terms:  # each term is a fresh tensor (a conv's or the upsampling's output)
                weighted = term
                if self.scale_attn is not None:
                    attention = self._attention(term)
                    weighted = term.mul_(attention) if in_place(term, attention) else term * attention
                total = weighted if total is None else total.add_(weighted)
            assert total is not None
            outputs.append(total.div_(len(terms)))
        if self.dyrelu is not None:
            outputs = [self.dyrelu(o, overwrite=True) for o in outputs]  # each o is this block's own
        return outputs
