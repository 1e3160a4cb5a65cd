"""CPU inference writes intermediates in place / into reused buffers (glip.memory.in_place): same bits.

Each module runs twice on the same inputs: under ``torch.no_grad()`` (the in-place paths) and with autograd
on (the out-of-place paths, as in training); the outputs must be equal bit for bit, on inputs that reach
every branch (padding, shifted windows, chunks, bands, batch of 2, text padding, several head groups).
"""

from __future__ import annotations

import torch

from glip.memory import in_place
from glip.models import dyhead, swin
from glip.models.dyhead import DyConv, DyReLU, deform_conv3x3_grid_sample
from glip.models.fusion import BiMultiHeadAttention, FusionBlock
from glip.models.swin import SwinTransformerBlock, window_attention_mask

from .test_device_paths import OpCounter


def _both(fn, *inputs):  # type: ignore[no-untyped-def]
    """fn(*inputs) without autograd (in-place paths) and with it; the inputs must come back unchanged."""
    kept = [t.clone() for t in _tensors(inputs)]
    with torch.no_grad():
        fast = fn(*inputs)
    with torch.enable_grad():
        slow = fn(*inputs)
    for before, after in zip(kept, _tensors(inputs)):
        assert torch.equal(before, after), "an input was overwritten"
    return fast, slow


def _tensors(values) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    if isinstance(values, torch.Tensor):
        return [values]
    if isinstance(values, (list, tuple)):
        return [t for v in values for t in _tensors(v)]
    return []


def _assert_same_bits(fast, slow) -> None:  # type: ignore[no-untyped-def]
    """Same values and the same layout (strides: GroupNorm and others pick kernels by layout)."""
    fast, slow = _tensors(fast), _tensors(slow)
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        assert torch.equal(a, b.detach()) and a.dtype == b.dtype and a.stride() == b.stride()


def test_in_place_only_for_cpu_inference():
    x = torch.ones(2)
    with torch.no_grad():
        assert in_place(x)
        assert not in_place(x, x.double())  # mixed dtypes
        assert not in_place(x.to("meta"))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not in_place(x)
    assert not in_place(x)  # autograd on


def test_swin_chunks_bounded_in_elements():
    """Wide stages get fewer windows / tokens per chunk (qkv and MLP hidden at most CHUNK_ELEMENTS)."""
    torch.manual_seed(0)
    block = SwinTransformerBlock(24, 3, window_size=2, shift_size=0).eval()
    x = torch.randn(1, 64, 24)
    with torch.no_grad():
        whole = block(x, 8, 8, None)
        swin.CHUNK_ELEMENTS = 4 * 3 * 24 * 3  # 3 windows of qkv (4 x 72 each); 864 // 96 = 9 tokens of hidden
        try:
            with OpCounter() as calls:
                chunked = block(x, 8, 8, None)
        finally:
            swin.CHUNK_ELEMENTS = 256 * 49 * 3 * 96
    assert calls.calls["addmm"] == 2 * 6 + 2 * 8  # 16 windows in 6 chunks; 64 tokens in 8 chunks
    # not bit for bit here: a GEMM of 9 rows may take another kernel than one of 64 (at GLIP-T's sizes the
    # forward's outputs are the same bits with and without this bound, checked when it was introduced)
    torch.testing.assert_close(whole, chunked, rtol=1e-6, atol=1e-6)


def test_swin_block_with_padding_shift_and_chunks():
    torch.manual_seed(0)
    # (height, width, window, shift, windows per chunk): padding + shift in chunks; shift without padding,
    # all windows in one chunk (the mask added per window in place); a map smaller than one window
    cases = [(7, 8, 3, 1, 5), (6, 9, 3, 1, 256), (6, 6, 3, 0, 2), (2, 2, 7, 3, 256), (1, 1, 7, 0, 256)]
    for height, width, window, shift, per_chunk in cases:
        block = SwinTransformerBlock(8, 2, window_size=window, shift_size=shift).eval()
        block.tokens_per_chunk = 20
        block.attn.windows_per_chunk = per_chunk
        x = torch.randn(2, height * width, 8)
        mask = window_attention_mask(height, width, window, shift) if shift else None
        _assert_same_bits(*_both(lambda x, block=block, h=height, w=width, m=mask: block(x, h, w, m), x))
    # a non-contiguous input: the same values (the out-of-place residual keeps the input's odd layout)
    block = SwinTransformerBlock(8, 2, window_size=3, shift_size=1).eval()
    x = torch.randn(2, 8, 20).transpose(1, 2)
    fast, slow = _both(lambda x: block(x, 4, 5, window_attention_mask(4, 5, 3, 1)), x)
    assert torch.equal(fast, slow.detach())


def test_autocast_keeps_the_out_of_place_paths():
    """CPU autocast (the predictor's bf16 on CPUs that have it) mixes dtypes: no in-place path may run."""
    torch.manual_seed(0)
    block = SwinTransformerBlock(8, 2, window_size=3, shift_size=1).eval()
    x = torch.randn(2, 20, 8)
    mask = window_attention_mask(4, 5, 3, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, slow = _both(lambda x: block(x, 4, 5, mask), x)
    _assert_same_bits(fast, slow)


def test_fusion_with_head_groups_and_text_padding():
    torch.manual_seed(0)
    attn = BiMultiHeadAttention(16, 12, 32, 4, 0.0).eval()
    attn.max_logit_elements = 2 * 50 * 6 * 2  # two heads per group
    vision, text = torch.randn(2, 50, 16), torch.randn(2, 6, 12)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    _assert_same_bits(*_both(attn, vision, text, mask))
    block = FusionBlock(16, 12, 32, 4, 0.0, layer_scale=0.1).eval()
    features = [torch.randn(2, 16, 5, 6), torch.randn(2, 16, 3, 3)]
    _assert_same_bits(*_both(block, features, text, mask))
    _assert_same_bits(*_both(block, features, text, torch.ones_like(mask)))  # no text padding
    _assert_same_bits(*_both(lambda f, t: block(f, t, mask, update_vision=False), features, text))


def test_deformable_conv_bands_with_batch_and_bias(monkeypatch):
    monkeypatch.setattr(dyhead, "DEFORM_COLUMNS_MAX_ELEMENTS", 2 * 8 * 9 * 10 * 3)  # three rows per band
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 10, 10, generator=generator)
    offset = torch.randn(2, 18, 10, 10, generator=generator)
    mask = torch.rand(2, 9, 10, 10, generator=generator)
    weight, bias = torch.randn(4, 8, 3, 3, generator=generator), torch.randn(4, generator=generator)
    _assert_same_bits(*_both(deform_conv3x3_grid_sample, x, offset, mask, weight, bias, 1))
    # one band, and a 1x1 map: the matmul's result has other strides than row-major (a transposed view for
    # a batch, stride 64 on a size-1 axis); the output must keep the out-of-place layout too (GroupNorm
    # takes another kernel on other layouts, which rounds differently)
    monkeypatch.setattr(dyhead, "DEFORM_COLUMNS_MAX_ELEMENTS", 1 << 22)
    for args in ((x, offset, mask), (x[:1, :, :1, :1], offset[:1, :, :1, :1], mask[:1, :, :1, :1])):
        _assert_same_bits(*_both(deform_conv3x3_grid_sample, *args, weight, bias, 1))


def test_dyconv_and_dyrelu(monkeypatch):
    """Bit for bit with the grid_sample deformable conv; the CPU default (the gather path) samples through
    ``embedding_bag``, whose kernel under autograd sums the 4 neighbours in another order: equal within float
    error there (the in-place paths around it are the same code)."""
    monkeypatch.setattr(dyhead, "DEFORM_COLUMNS_MAX_ELEMENTS", 2 * 32 * 9 * 12 * 2)
    torch.manual_seed(0)
    conv = DyConv(32, 32).eval()  # GroupNorm(16): 2 channels per group, so 1x1 maps of one image work
    for parameter in conv.parameters():  # away from the zero init, so every term and offset matters
        torch.nn.init.normal_(parameter, std=0.1)
    for batch in (2, 1):
        features = [
            torch.randn(batch, 32, 12, 12),
            torch.randn(batch, 32, 6, 6),
            torch.randn(batch, 32, 3, 3),
        ]
        small = [torch.randn(batch, 32, 2, 2), torch.randn(batch, 32, 1, 1)]  # 1x1
        monkeypatch.setattr(dyhead.ConvNorm, "deform_impl", "grid_sample")
        _assert_same_bits(*_both(conv, features))
        _assert_same_bits(*_both(conv, small))
        monkeypatch.setattr(dyhead.ConvNorm, "deform_impl", "auto")
        for fast, slow in (_both(conv, features), _both(conv, small)):
            for a, b in zip(fast, slow, strict=True):
                torch.testing.assert_close(a, b.detach(), atol=1e-6, rtol=1e-5)
                assert a.stride() == b.stride()
    relu = DyReLU(32).eval()
    _assert_same_bits(*_both(relu, features[0]))
    _assert_same_bits(*_both(lambda: relu(features[0].clone(), overwrite=True)))
    kept = features[0].clone()
    with torch.no_grad():
        relu(kept)
    assert torch.equal(kept, features[0])  # not overwritten unless asked


def test_autocast_inference_still_chunks_the_mlp():
    """Under CPU autocast the in-place path steps aside, but the MLP of a CPU inference still runs in chunks
    (memory bound on large maps)."""
    torch.manual_seed(0)
    block = SwinTransformerBlock(8, 2, window_size=3, shift_size=1).eval()
    block.tokens_per_chunk = 4
    x = torch.randn(2, 20, 8)
    mask = window_attention_mask(4, 5, 3, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad(), OpCounter() as calls:
            chunked = block(x, 4, 5, mask)
        whole = block(x, 4, 5, mask)  # autograd on: one MLP over all tokens
    assert calls.calls["addmm"] == 2 + 2 * 10  # qkv + proj once (8 windows); fc1 + fc2 per 4 of 40 tokens
    torch.testing.assert_close(chunked, whole.detach(), rtol=2e-2, atol=2e-2)
