"""CPU inference writes intermediates in place / into reused buffers (glip.memory.in_place): same bits.

Each module runs twice on the same inputs: under ``torch.no_grad()`` (the in-place paths) and with autograd
on (the out-of-place paths, as in training); the outputs must be equal bit for bit, on inputs that reach
every branch (padding, shifted windows, chunks, bands, batch of 2, text padding, several head groups).
"""

from __future__ import annotations

import torch

from glip.memory import in_place
from glip.models import dyhead
from glip.models.dyhead import DyConv, DyReLU, deform_conv3x3_grid_sample
from glip.models.fusion import BiMultiHeadAttention, FusionBlock
from glip.models.swin import SwinTransformerBlock, window_attention_mask


def _both(fn):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        fast = fn()
    with torch.enable_grad():
        slow = fn()
    return fast, slow


def _assert_same_bits(fast, slow) -> None:  # type: ignore[no-untyped-def]
    fast = fast if isinstance(fast, (list, tuple)) else [fast]
    slow = slow if isinstance(slow, (list, tuple)) else [slow]
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        assert torch.equal(a, b.detach())


def test_in_place_only_for_cpu_inference():
    x = torch.ones(2)
    with torch.no_grad():
        assert in_place(x)
        assert not in_place(x, x.double())  # mixed dtypes
        assert not in_place(x.to("meta"))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not in_place(x)
    assert not in_place(x)  # autograd on


def test_swin_block_with_padding_shift_and_chunks():
    torch.manual_seed(0)
    block = SwinTransformerBlock(8, 2, window_size=3, shift_size=1).eval()
    block.tokens_per_chunk = 20
    block.attn.windows_per_chunk = 5
    height, width = 7, 8  # padded to 9 x 9
    x = torch.randn(2, height * width, 8)
    mask = window_attention_mask(height, width, 3, 1)
    _assert_same_bits(*_both(lambda: block(x, height, width, mask)))
    unshifted = SwinTransformerBlock(8, 2, window_size=3, shift_size=0).eval()
    _assert_same_bits(*_both(lambda: unshifted(x, height, width, None)))


def test_fusion_with_head_groups_and_text_padding():
    torch.manual_seed(0)
    attn = BiMultiHeadAttention(16, 12, 32, 4, 0.0).eval()
    attn.max_logit_elements = 2 * 50 * 6 * 2  # two heads per group
    vision, text = torch.randn(2, 50, 16), torch.randn(2, 6, 12)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    _assert_same_bits(*_both(lambda: attn(vision, text, mask)))
    block = FusionBlock(16, 12, 32, 4, 0.0, layer_scale=0.1).eval()
    features = [torch.randn(2, 16, 5, 6), torch.randn(2, 16, 3, 3)]
    fast, slow = _both(lambda: block(features, text, mask))
    _assert_same_bits(fast[0] + [fast[1]], slow[0] + [slow[1]])


def test_deformable_conv_bands_with_batch_and_bias(monkeypatch):
    monkeypatch.setattr(dyhead, "DEFORM_COLUMNS_MAX_ELEMENTS", 2 * 8 * 9 * 10 * 3)  # three rows per band
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 10, 10, generator=generator)
    offset = torch.randn(2, 18, 10, 10, generator=generator)
    mask = torch.rand(2, 9, 10, 10, generator=generator)
    weight, bias = torch.randn(4, 8, 3, 3, generator=generator), torch.randn(4, generator=generator)
    _assert_same_bits(*_both(lambda: deform_conv3x3_grid_sample(x, offset, mask, weight, bias, 1)))
    # one band, and a 1x1 map: the matmul's result has other strides than row-major (a transposed view for
    # a batch, stride 64 on a size-1 axis); the output must keep the out-of-place layout too (GroupNorm
    # takes another kernel on other layouts, which rounds differently)
    monkeypatch.setattr(dyhead, "DEFORM_COLUMNS_MAX_ELEMENTS", 1 << 22)
    for args in ((x, offset, mask), (x[:1, :, :1, :1], offset[:1, :, :1, :1], mask[:1, :, :1, :1])):
        fast, slow = _both(lambda args=args: deform_conv3x3_grid_sample(*args, weight, bias, 1))
        _assert_same_bits(fast, slow)
        assert fast.stride() == slow.stride()


def test_dyconv_and_dyrelu(monkeypatch):
    monkeypatch.setattr(dyhead, "DEFORM_COLUMNS_MAX_ELEMENTS", 2 * 16 * 9 * 12 * 2)
    torch.manual_seed(0)
    conv = DyConv(16, 16).eval()
    for parameter in conv.parameters():  # away from the zero init, so every term and offset matters
        torch.nn.init.normal_(parameter, std=0.1)
    features = [torch.randn(2, 16, 12, 12), torch.randn(2, 16, 6, 6), torch.randn(2, 16, 3, 3)]
    _assert_same_bits(*_both(lambda: conv(features)))
    relu = DyReLU(16).eval()
    _assert_same_bits(*_both(lambda: relu(features[0])))
