"""Swin Transformer v1 image backbone, numerically identical to the one used by the official GLIP.

The official GLIP backbone lives in ``maskrcnn_benchmark/modeling/backbone/swint.py`` (an mmdet-style Swin v1,
"Swin-Transformer-Object-Detection" flavour). This is an independent re-implementation that keeps the official
module names, so that the ``backbone.body.*`` entries of a GLIP checkpoint load into :class:`SwinTransformer`
with ``strict=True`` once the ``backbone.body.`` prefix is removed.

Behaviour that matters for parity with the official code:

* the input is zero-padded on the right/bottom to a multiple of the patch size (4);
* every feature map is zero-padded on the right/bottom to a multiple of the window size *after* ``norm1``
  (the window is never clamped to the feature size, unlike the classification Swin);
* odd blocks use a cyclic shift of ``window_size // 2``; the shifted-window mask is built on the padded size and
  uses ``-100.0`` (not ``-inf``) for pairs from different regions;
* patch merging pads H/W to even sizes and concatenates ``x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2],
  x[1::2, 1::2]`` in that order;
* all four stages are returned (taken before the stage's patch merging), each through an output LayerNorm
  ``norm{i}`` except ``norm0``, which is an ``nn.Identity`` for the ``*-RETINANET`` backbones used by GLIP.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from glip.memory import in_place
from glip.models.frozen import FrozenStages

__all__ = [
    "PatchEmbed",
    "PatchMerging",
    "SwinTransformer",
    "SwinTransformerBlock",
    "SwinStage",
    "WindowAttention",
    "relative_position_index",
    "window_attention_mask",
    "window_partition",
    "window_reverse",
]

# Value written into the shifted-window attention mask for token pairs from different regions
# (official swint.py uses masked_fill(..., float(-100.0)), not -inf).
MASK_VALUE = -100.0
# CPU inference: the largest intermediate of a window-attention chunk (its qkv, windows x N x 3C) and of an MLP
# chunk (its hidden layer, tokens x 4C) holds at most about this many elements: 256 windows of Swin-T's first
# stage (14 MB fp32), under glip.memory's 16 MB map threshold, so chunks are reused from the heap
CHUNK_ELEMENTS = 256 * 49 * 3 * 96


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """Split a channels-last map into non-overlapping windows.

    Args:
        x: ``(B, H, W, C)`` with H and W multiples of ``window_size``.
        window_size: window side ``w``.

    Returns:
        ``(B * H/w * W/w, w, w, C)``, windows in row-major order per image.
    """
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)


def window_reverse(windows: Tensor, window_size: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`window_partition`.

    Args:
        windows: ``(B * H/w * W/w, w, w, C)``.
        window_size: window side ``w``.
        height: padded map height ``H``.
        width: padded map width ``W``.

    Returns:
        ``(B, H, W, C)``.
    """
    num_h, num_w = height // window_size, width // window_size
    b = windows.shape[0] // (num_h * num_w)
    x = windows.view(b, num_h, num_w, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, height, width, -1)


@functools.lru_cache(maxsize=32)
def window_gather_indices(
    batch: int, height: int, width: int, window_size: int, shift: int
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Indices that take a block's tokens to its (shifted) windows and back, each in one ``index_select``.

    The same as padding the ``(B, H, W, C)`` map right/bottom to multiples of ``w``, rolling it by
    ``-shift``, :func:`window_partition`, and back: :func:`window_reverse`, rolling by ``+shift``, cropping.

    Returns (CPU, int64):
        gather: ``(B * Hp * Wp,)`` token row (of the ``(B * H * W, C)`` tokens) of each window slot, in
            :func:`window_partition` order; padding slots point at row 0.
        padding: ``(P,)`` the window slots that are padding (zero after the gather), or None.
        scatter: ``(B * H * W,)`` window slot of each token in row-major order.
    """
    w = window_size
    hp = (height + w - 1) // w * w
    wp = (width + w - 1) // w * w
    # position in the rolled, padded map: (window row, row in it) and (window column, column in it)
    r = torch.arange(hp, device="cpu").view(hp // w, 1, w, 1)
    q = torch.arange(wp, device="cpu").view(1, wp // w, 1, w)
    pr = (r + shift) % hp  # torch.roll(-shift): rolled[r] = padded[(r + shift) % hp]
    pc = (q + shift) % wp
    inside = (pr < height) & (pc < width)  # (hp/w, wp/w, w, w) in window_partition order
    token = torch.where(inside, pr * width + pc, 0)
    images = torch.arange(batch, device="cpu").view(batch, 1, 1, 1, 1)
    gather = (token.unsqueeze(0) + images * (height * width)).reshape(-1)
    padding = None
    if not bool(inside.all()):
        padding = (~inside).expand(batch, -1, -1, -1, -1).reshape(-1).nonzero().flatten()
    # back: token (row, col) sits at rolled position ((row - shift) % hp, (col - shift) % wp)
    rows = (torch.arange(height, device="cpu") - shift) % hp
    cols = (torch.arange(width, device="cpu") - shift) % wp
    slot_in_image = ((rows // w).view(-1, 1) * (wp // w) + (cols // w).view(1, -1)) * (w * w) + (
        (rows % w).view(-1, 1) * w + (cols % w).view(1, -1)
    )
    scatter = (
        slot_in_image.unsqueeze(0) + torch.arange(batch, device="cpu").view(batch, 1, 1) * (hp * wp)
    ).reshape(-1)
    return gather, padding, scatter


def relative_position_index(window_size: int) -> Tensor:
    """Index into the relative position bias table for every pair of tokens of a window.

    Returns:
        ``(w*w, w*w)`` int64; entry ``[i, j]`` is ``(dy + w - 1) * (2w - 1) + (dx + w - 1)`` where
        ``(dy, dx)`` is the offset of token ``i`` relative to token ``j`` (tokens in row-major order).
    """
    ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
    rel = rel + (window_size - 1)
    return rel[0] * (2 * window_size - 1) + rel[1]


def window_attention_mask(
    height: int, width: int, window_size: int, shift: int, device: torch.device | None = None
) -> Tensor:
    """Additive attention mask for shifted-window attention (official swint.py ``BasicLayer.forward``).

    The map is first padded (conceptually) to ``Hp = ceil(H / w) * w`` and ``Wp = ceil(W / w) * w``. Each
    position gets a region id from the slices ``(0, -w), (-w, -s), (-s, None)`` along each axis (``s = shift``);
    after the cyclic shift, a window may hold tokens from several regions, and attention between tokens of
    different regions gets ``-100.0``. With ``shift == 0`` the mask is all zeros.

    Args:
        height: feature map height ``H`` (before window padding).
        width: feature map width ``W`` (before window padding).
        window_size: window side ``w``.
        shift: cyclic shift ``s`` (``0 <= s < w``).
        device: device of the returned tensor.

    Returns:
        ``(num_windows, w*w, w*w)`` float32 with ``num_windows = Hp/w * Wp/w``.
    """
    hp = (height + window_size - 1) // window_size * window_size  # ceil; no negative floor division (ONNX)
    wp = (width + window_size - 1) // window_size * window_size
    n = window_size * window_size
    num_windows = (hp // window_size) * (wp // window_size)
    if shift == 0:
        return torch.zeros(num_windows, n, n, device=device)
    region = torch.zeros(1, hp, wp, 1, device=device)
    slices = (slice(0, -window_size), slice(-window_size, -shift), slice(-shift, None))
    count = 0
    for hs in slices:
        for ws in slices:
            region[:, hs, ws, :] = count
            count += 1
    ids = window_partition(region, window_size).reshape(-1, n)  # (nW, N)
    # (nW, N, N) zeros, MASK_VALUE where the two tokens' regions differ (no (nW, N, N) float temporaries)
    return torch.zeros(num_windows, n, n, device=device).masked_fill_(
        ids.unsqueeze(1) != ids.unsqueeze(2), MASK_VALUE
    )


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """Stochastic depth per sample (same rule as timm ``DropPath``): keep with ``1 - p`` and rescale."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module wrapper of :func:`drop_path` (no parameters, no state_dict entries)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class Mlp(nn.Module):
    """Transformer feed-forward: ``fc1 -> GELU -> fc2`` (dropout 0 in GLIP, so omitted)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.fc1(x)
        if in_place(hidden):  # CPU inference: GELU in place (the same bits, one large tensor fewer)
            return self.fc2(torch.ops.aten.gelu_(hidden, approximate=self.act.approximate))
        return self.fc2(self.act(hidden))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias.

    State dict: ``qkv`` (with bias), ``proj``, ``relative_position_bias_table`` ``[(2w-1)^2, heads]`` and the
    persistent int64 buffer ``relative_position_index`` ``[w*w, w*w]`` (it is in the official checkpoints).
    """

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=True)
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)
        # CPU without autograd: windows are attended in chunks of this many (bounds the memory of big images)
        self.windows_per_chunk = 256

    def forward(self, x: Tensor, mask: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        """Attend within each window.

        Args:
            x: ``(num_windows * B, N, C)`` tokens of each window, ``N = w*w``.
            mask: ``(num_windows, N, N)`` additive mask (0 / -100) or ``None``.
            out: where the chunked CPU inference path writes its result (may be ``x`` itself: each chunk is
                read before it is written); elsewhere ignored.

        Returns:
            ``(num_windows * B, N, C)``.
        """
        if torch.is_grad_enabled() or torch.compiler.is_exporting() or x.device.type != "cpu":
            return self._attend(x, mask, 0)
        # chunks of at most windows_per_chunk windows and at most CHUNK_ELEMENTS elements of qkv
        chunk = max(1, min(self.windows_per_chunk, CHUNK_ELEMENTS // (x.shape[1] * 3 * self.dim)))
        if x.shape[0] <= chunk:
            return self._attend(x, mask, 0)
        # CPU inference on large maps: windows in chunks, so the (windows, heads, N, N) scores stay small
        if out is None:
            out = torch.empty_like(x)
        for start in range(0, x.shape[0], chunk):
            stop = min(start + chunk, x.shape[0])
            out[start:stop] = self._attend(x[start:stop], mask, start)
        return out

    def _attend(self, x: Tensor, mask: Tensor | None, start: int) -> Tensor:
        """Windows ``start .. start + len(x)`` of the batch (window index ``i`` uses mask ``i % num_windows``)."""
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (bw, heads, N, hd)
        # CPU inference: scale, bias and mask are applied in place (the same bits, fewer temporaries)
        reuse = in_place(x, self.relative_position_bias_table)
        q = q.mul_(self.scale) if reuse else q * self.scale
        attn = q @ k.transpose(-2, -1)  # (bw, heads, N, N)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1).unsqueeze(0)
        attn = attn.add_(bias) if reuse else attn + bias
        if mask is not None:
            num_windows = mask.shape[0]
            if start == 0 and bw % num_windows == 0:
                per_window = attn.view(bw // num_windows, num_windows, self.num_heads, n, n)
                if reuse:
                    per_window.add_(mask[None, :, None])
                else:
                    attn = (per_window + mask[None, :, None]).view(bw, self.num_heads, n, n)
            else:
                index = torch.arange(start, start + bw, device=mask.device) % num_windows
                attn = attn.add_(mask[index][:, None]) if reuse else attn + mask[index][:, None]
        # Explicit softmax in fp32, as in the official code (no fused SDPA).
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class SwinTransformerBlock(nn.Module):
    """Pre-norm Swin block: (shifted) window attention + MLP, both with residual and stochastic depth."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size), got {shift_size} for {window_size}")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.drop_path = DropPath(drop_path_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # CPU without autograd: the MLP runs over chunks of this many tokens (bounds the memory of big images)
        self.tokens_per_chunk = 8192

    def forward(self, x: Tensor, height: int, width: int, attn_mask: Tensor | None) -> Tensor:
        """Apply the block.

        Args:
            x: ``(B, H*W, C)`` tokens in row-major order.
            height: ``H``.
            width: ``W``.
            attn_mask: ``(num_windows, w*w, w*w)`` mask of the padded map (used only when shifted).

        Returns:
            ``(B, H*W, C)``.
        """
        b, length, c = x.shape
        if length != height * width:
            raise ValueError(f"got {length} tokens for a {height}x{width} map")
        if not self.training and in_place(x, self.norm1.weight):  # CPU inference, no autocast
            return self._forward_inference(x, height, width, attn_mask)
        w = self.window_size
        shortcut = x
        x = self.norm1(x).view(b, height, width, c)
        # official swint.py: pad right/bottom to a multiple of the window AFTER norm1 (padded tokens are 0).
        pad_b = (w - height % w) % w
        pad_r = (w - width % w) % w
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = height + pad_b, width + pad_r
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            mask = attn_mask
        else:
            mask = None
        windows = window_partition(x, w).reshape(-1, w * w, c)
        windows = self.attn(windows, mask=mask)
        x = window_reverse(windows.view(-1, w, w, c), w, hp, wp)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        if pad_b or pad_r:
            x = x[:, :height, :width, :].contiguous()
        x = shortcut + self.drop_path(x.reshape(b, height * width, c))
        if (
            torch.is_grad_enabled()
            or self.training
            or torch.compiler.is_exporting()
            or x.device.type != "cpu"
        ):
            return x + self.drop_path(self.mlp(self.norm2(x)))
        # CPU inference under autocast (the in-place path above needs one dtype): the MLP still in chunks
        return self._add_mlp(x.reshape(b * length, c)).view(b, length, c)

    def _add_mlp(self, tokens: Tensor) -> Tensor:
        """``tokens += MLP(norm2(tokens))`` over chunks of at most ``tokens_per_chunk`` tokens and at most
        :data:`CHUNK_ELEMENTS` elements of the (4x wider) hidden layer; CPU inference. (N, C) -> the same."""
        chunk = max(1, min(self.tokens_per_chunk, CHUNK_ELEMENTS // self.mlp.fc1.out_features))
        for start in range(0, tokens.shape[0], chunk):
            part = tokens[start : start + chunk]
            part += self.mlp(self.norm2(part))
        return tokens

    def _forward_inference(self, x: Tensor, height: int, width: int, attn_mask: Tensor | None) -> Tensor:
        """:meth:`forward` for CPU inference, with two large allocations instead of ten.

        Padding, the cyclic shift and the window partition are one ``index_select`` (and back another, into
        the normed tokens' buffer); the attention writes over its input windows chunk by chunk; the MLP
        (4x wider hidden layer) runs over chunks of tokens, added in place. The same operations on the same
        numbers as :meth:`forward` (gathers copy exactly, ``a + b`` is ``b + a``), so the same bits.
        x: ``(B, H*W, C)`` -> ``(B, H*W, C)``.
        """
        b, length, c = x.shape
        w = self.window_size
        gather, padding, scatter = window_gather_indices(b, height, width, w, self.shift_size)
        normed = self.norm1(x).view(b * length, c)
        windows = normed.index_select(0, gather)  # (B * Hp * Wp, C) in window_partition order
        if padding is not None:
            windows.index_fill_(0, padding, 0.0)  # official: padded after norm1, so the padding is 0
        windows = windows.view(-1, w * w, c)
        windows = self.attn(windows, mask=attn_mask if self.shift_size > 0 else None, out=windows)
        out = torch.index_select(windows.view(-1, c), 0, scatter, out=normed)  # (B * H * W, C)
        del windows
        out += x.reshape(b * length, c)  # the residual
        return self._add_mlp(out).view(b, length, c)


class PatchMerging(nn.Module):
    """2x2 patch merging: ``(B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        b, _, c = x.shape
        x = x.view(b, height, width, c)
        # official swint.py: pad bottom/right to even sizes, so the output is (H+1)//2 x (W+1)//2.
        if height % 2 or width % 2:
            x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        # Concatenation order matters for the checkpoint's `reduction` weight.
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        x = x.view(b, -1, 4 * c)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """One stage (official name ``BasicLayer``): ``blocks.{j}`` then optional ``downsample`` (PatchMerging)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop_path_rates: Sequence[float],
        downsample: bool,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                num_heads,
                window_size,
                shift_size=0 if j % 2 == 0 else self.shift_size,
                mlp_ratio=mlp_ratio,
                drop_path_rate=drop_path_rates[j],
            )
            for j in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: Tensor, height: int, width: int) -> tuple[Tensor, Tensor, int, int]:
        """Run the blocks, then the patch merging.

        Args:
            x: ``(B, H*W, C)``.
            height: ``H``.
            width: ``W``.

        Returns:
            ``(stage_out, next_in, H', W')``: ``stage_out`` ``(B, H*W, C)`` is the output of the last block
            (before merging); ``next_in`` ``(B, H'*W', 2C)`` with ``H' = (H+1)//2`` (or ``stage_out``, ``H``,
            ``W`` when there is no downsample).
        """
        attn_mask = window_attention_mask(height, width, self.window_size, self.shift_size, device=x.device)
        attn_mask = attn_mask.to(x.dtype)
        for blk in self.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, height, width, attn_mask, use_reentrant=False)
            else:
                x = blk(x, height, width, attn_mask)
        if self.downsample is None:
            return x, x, height, width
        down = self.downsample(x, height, width)
        return x, down, (height + 1) // 2, (width + 1) // 2


class PatchEmbed(nn.Module):
    """Non-overlapping 4x4 patch embedding: ``proj`` Conv2d(3, C, 4, stride 4) + ``norm`` LayerNorm(C)."""

    def __init__(self, embed_dim: int, patch_size: int = 4, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, C, ceil(H/4), ceil(W/4))`` (input zero-padded right/bottom first)."""
        p = self.patch_size
        _, _, h, w = x.shape
        pad_r, pad_b = (p - w % p) % p, (p - h % p) % p
        if pad_r or pad_b:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        x = self.proj(x)
        b, c, hh, ww = x.shape
        x = self.norm(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).reshape(b, c, hh, ww)


class SwinTransformer(FrozenStages):
    """Swin v1 backbone returning the four stage maps (GLIP ``SWINT-FPN-RETINANET`` body).

    Args:
        embed_dim: channels ``C`` of the first stage (GLIP-T 96, GLIP-L 192).
        depths: blocks per stage (GLIP-T ``(2, 2, 6, 2)``, GLIP-L ``(2, 2, 18, 2)``).
        num_heads: attention heads per stage (GLIP-T ``(3, 6, 12, 24)``, GLIP-L ``(6, 12, 24, 48)``).
        window_size: attention window side (GLIP-T 7, GLIP-L 12).
        mlp_ratio: MLP hidden size / channels.
        drop_path_rate: stochastic depth of the last block; linearly spaced from 0 over all blocks.
        out_norm: apply the per-stage output LayerNorms ``norm1..norm3`` (``norm0`` is always Identity).
        frozen_stages: official semantics (swint.py ``_freeze_stages``): ``>= 0`` freezes ``patch_embed``;
            ``>= 2`` additionally freezes ``layers[0 .. frozen_stages - 2]`` (each including its downsample).
            ``-1`` freezes nothing. Frozen parts are kept in eval mode and get ``requires_grad=False``.
        use_checkpoint: gradient-checkpoint every block in training (saves memory, same numbers).
    """

    def __init__(
        self,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: int,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.2,
        out_norm: bool = True,
        frozen_stages: int = -1,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError("depths and num_heads must have the same length")
        self.num_stages = len(depths)
        self.frozen_stages = frozen_stages
        self.num_features = [embed_dim * 2**i for i in range(self.num_stages)]
        self.patch_embed = PatchEmbed(embed_dim)
        total = sum(depths)
        # Same spacing as the official torch.linspace(0, drop_path_rate, sum(depths)).
        rates = [float(r) for r in torch.linspace(0, drop_path_rate, total, device="cpu")] if total else []
        self.layers = nn.ModuleList()
        start = 0
        for i, depth in enumerate(depths):
            self.layers.append(
                SwinStage(
                    dim=self.num_features[i],
                    depth=depth,
                    num_heads=num_heads[i],
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    drop_path_rates=rates[start : start + depth],
                    downsample=i < self.num_stages - 1,
                    use_checkpoint=use_checkpoint,
                )
            )
            start += depth
        # official swint.py: one output norm per returned stage, but norm0 is nn.Identity for the
        # "*-RETINANET" conv bodies (GLIP's SWINT-FPN-RETINANET), so checkpoints have no norm0 keys.
        for i in range(self.num_stages):
            norm: nn.Module = nn.LayerNorm(self.num_features[i]) if out_norm and i > 0 else nn.Identity()
            self.add_module(f"norm{i}", norm)
        self.reset_parameters()
        self._freeze_stages()

    def reset_parameters(self) -> None:
        """Official init: truncated normal (std 0.02) for Linear weights and bias tables, zero biases, unit LN."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, WindowAttention):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    def _frozen_modules(self) -> list[nn.Module]:
        modules: list[nn.Module] = []
        if self.frozen_stages >= 0:
            modules.append(self.patch_embed)
        if self.frozen_stages >= 2:
            modules.extend(self.layers[: self.frozen_stages - 1])
        return modules

    def forward(self, images: Tensor) -> list[Tensor]:
        """Compute the four stage feature maps.

        Args:
            images: ``(B, 3, H, W)`` normalised images (any H, W; padded internally).

        Returns:
            List of 4 maps, stage ``i`` ``(B, C * 2^i, H_i, W_i)`` with ``H_0 = ceil(H/4)`` and
            ``H_{i+1} = ceil(H_i / 2)`` (i.e. ``H/4/2^i`` for sizes divisible by 32); strides 4, 8, 16, 32.
        """
        x = self.patch_embed(images)
        b, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
        outs: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            out, x, next_h, next_w = layer(x, h, w)
            out = getattr(self, f"norm{i}")(out)
            outs.append(out.view(b, h, w, self.num_features[i]).permute(0, 3, 1, 2).contiguous())
            h, w = next_h, next_w
        return outs
