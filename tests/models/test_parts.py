"""Hand-computed expectations for anchors, the box coder, deformable offsets and the fusion switch."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchvision.ops import deform_conv2d

from glip.box_coder import BoxCoder
from glip.config import HeadConfig, get_preset
from glip.models.anchors import AnchorGenerator, legacy_cell_anchor
from glip.models.dyhead import deform_conv3x3_gather, deform_conv3x3_grid_sample, reinterpret_offsets
from glip.models.glip import build_model
from glip.preprocess import ImageBatch, resized_hw
from glip.text.tokenizer import tokenize_captions


def test_cell_anchors_match_official_values():
    expected = {
        (8, 64): [-28, -28, 35, 35],
        (16, 128): [-56, -56, 71, 71],
        (32, 256): [-112, -112, 143, 143],
        (64, 512): [-224, -224, 287, 287],
        (128, 1024): [-448, -448, 575, 575],
    }
    for (stride, size), box in expected.items():
        assert legacy_cell_anchor(stride, size).tolist() == [box]


def test_grid_anchors_row_major_shifts():
    generator = AnchorGenerator((64,), (8,))
    (anchors,) = generator.grid_anchors([(2, 3)])
    assert anchors.shape == (6, 4)
    # row-major over (y, x): index 1 is x+8, index 3 is y+8
    assert anchors[0].tolist() == [-28, -28, 35, 35]
    assert anchors[1].tolist() == [-20, -28, 43, 35]
    assert anchors[3].tolist() == [-28, -20, 35, 43]


def test_box_coder_legacy_plus_one():
    coder = BoxCoder()
    anchor = torch.tensor([[0.0, 0.0, 9.0, 9.0]])  # width 10 with "+1"
    # zero deltas decode to the anchor itself: x2 = cx + 0.5 * (w - 1) = 4.5 + 4.5
    assert coder.decode(torch.zeros(1, 4), anchor).tolist() == [[0.0, 0.0, 9.0, 9.0]]
    # dx = 10 * 0.5 moves the centre 4.5 -> 9.5 (half a width); dw = 5 * log(2) doubles the width to 20:
    # x1 = 9.5 - 0.5 * (20 - 1) = 0, x2 = 9.5 + 9.5 = 19
    deltas = torch.tensor([[5.0, 0.0, 5 * torch.log(torch.tensor(2.0)).item(), 0.0]])
    torch.testing.assert_close(coder.decode(deltas, anchor), torch.tensor([[0.0, 0.0, 19.0, 9.0]]))
    gt = torch.tensor([[2.0, 3.0, 20.0, 11.0]])
    torch.testing.assert_close(coder.decode(coder.encode(gt, anchor), anchor), gt)
    # huge deltas are clamped at log(1000/16)
    big = coder.decode(torch.tensor([[0.0, 0.0, 1000.0, 0.0]]), anchor)
    assert abs((big[0, 2] - big[0, 0] + 1).item() - 10 * 1000 / 16) < 1e-3


def test_official_resize_rule():
    assert resized_hw(240, 180, 200, 333) == (200, 266)  # reference input
    assert resized_hw(1333, 800, 800, 1333) == (800, 1333)
    assert resized_hw(2000, 500, 800, 1333) == (
        333,
        1332,
    )  # longer side capped: size = round(1333 * 500 / 2000)
    assert resized_hw(500, 800, 800, 1333) == (1280, 800)


def test_reinterpret_offsets_takes_the_first_values_in_memory_order():
    """The CUDA kernel reads the first K*Ho*Wo values of level l's offsets for the smaller level l+1."""
    offsets = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)
    fitted = reinterpret_offsets(offsets, (2, 2))
    assert fitted.shape == (2, 2, 2, 2)
    assert fitted[0].reshape(-1).tolist() == list(range(8))  # not a crop (which would be 0, 1, 4, 5, ...)
    assert fitted[1].reshape(-1).tolist() == list(range(32, 40))
    assert reinterpret_offsets(offsets, (4, 4)) is offsets


@pytest.mark.parametrize("max_elements", [1 << 22, 0], ids=["whole-map", "row-by-row"])
@pytest.mark.parametrize(
    "ours_fn", [deform_conv3x3_grid_sample, deform_conv3x3_gather], ids=["grid", "gather"]
)
def test_deform_conv_paths_equal_torchvision(monkeypatch, max_elements, ours_fn):
    """Forward and every gradient (input, offsets, mask), samples inside, across and outside the map."""
    monkeypatch.setattr("glip.models.dyhead.DEFORM_COLUMNS_MAX_ELEMENTS", max_elements)
    torch.manual_seed(0)
    for batch, stride, (height, width) in [
        (2, 1, (7, 9)),
        (2, 2, (9, 12)),
        (2, 1, (1, 1)),
        (2, 2, (3, 5)),
        (1, 1, (1, 4)),
        (1, 1, (6, 5)),
    ]:
        x = torch.randn(batch, 5, height, width)
        out_h, out_w = (height - 1) // stride + 1, (width - 1) // stride + 1
        offset = torch.randn(batch, 18, out_h, out_w) * 2.5  # many samples fall outside the map
        mask = torch.rand(batch, 9, out_h, out_w)
        weight = torch.randn(4, 5, 3, 3)
        bias = torch.randn(4)
        leaves = [t.clone().requires_grad_() for t in (x, offset, mask)]
        expected = deform_conv2d(leaves[0], leaves[1], weight, bias, stride=stride, padding=1, mask=leaves[2])
        expected.square().sum().backward()
        inputs = [t.clone().requires_grad_() for t in (x, offset, mask)]
        ours = ours_fn(*inputs, weight, bias, stride)
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)
        ours.square().sum().backward()
        for mine, theirs in zip(inputs, leaves, strict=True):
            torch.testing.assert_close(mine.grad, theirs.grad, atol=2e-4, rtol=1e-4)
        with torch.no_grad():
            assert torch.equal(ours_fn(x, offset, mask, weight, bias, stride), ours.detach())


def test_conv_norm_takes_the_gather_path_on_cpu(monkeypatch):
    """``deform_impl = "auto"``: the channels-last gather on CPU; grid_sample only when asked (or exporting)."""
    from glip.models import dyhead

    calls: list[str] = []
    for name in ("deform_conv3x3_gather", "deform_conv3x3_grid_sample"):
        original = getattr(dyhead, name)
        monkeypatch.setattr(dyhead, name, lambda *a, _n=name, _f=original: calls.append(_n) or _f(*a))
    conv = dyhead.ConvNorm(4, 4, 1, deformable=True, gn_groups=2)
    x, offset, mask = torch.randn(1, 4, 5, 6), torch.randn(1, 18, 5, 6), torch.rand(1, 9, 5, 6)
    auto = conv(x, offset, mask)
    monkeypatch.setattr(conv, "deform_impl", "grid_sample")
    torch.testing.assert_close(conv(x, offset, mask), auto, atol=1e-5, rtol=1e-5)
    assert calls == ["deform_conv3x3_gather", "deform_conv3x3_grid_sample"]


def _head_outputs(model, caption: str):
    tokens = tokenize_captions([caption], pad_to_max=False)
    torch.manual_seed(1)
    images = ImageBatch(torch.randn(1, 3, 128, 160), [(128, 160)])
    with torch.no_grad():
        return model(images, tokens.input_ids, tokens.attention_mask)


def test_late_fusion_switch():
    """Deep fusion: image features depend on the prompt. Late fusion (GLIP-T (A)): they do not, and the
    tower has no fusion or BERT layers."""
    base = get_preset("tiny_random")
    torch.manual_seed(0)
    deep = build_model(base).eval()
    late_config = dataclasses.replace(base, head=HeadConfig(channels=64, num_blocks=2, deep_fusion=False))
    torch.manual_seed(0)
    late = build_model(late_config).eval()
    assert all(b.fusion is None and b.text_layer is None for b in late.head.blocks)
    assert all(b.fusion is not None and b.text_layer is not None for b in deep.head.blocks)
    for model, prompt_dependent in ((deep, True), (late, False)):
        a = _head_outputs(model, "a red car. a dog")
        b = _head_outputs(model, "person. bicycle")
        same = torch.allclose(a.head.box_regression[0], b.head.box_regression[0])
        assert same is not prompt_dependent
        assert torch.allclose(a.head.centerness[1], b.head.centerness[1]) is not prompt_dependent
    # late fusion scores the encoder's own (masked) token features
    out = _head_outputs(late, "a red car")
    torch.testing.assert_close(out.head.fused_text, out.text.embedded)


def test_reassociated_fusion_equals_the_literal_computation():
    """BiMultiHeadAttention.forward (no (N, 2048) image tensor) == forward_naive (official), values and grads."""
    from glip.models.fusion import BiMultiHeadAttention

    torch.manual_seed(0)
    attention = BiMultiHeadAttention(64, 96, 256, 4, dropout=0.0).train()
    vision = torch.randn(2, 300, 64, requires_grad=True)
    text = torch.randn(2, 12, 96, requires_grad=True)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:] = 0  # padding in the second caption
    fast = attention(vision, text, mask)
    grads_fast = torch.autograd.grad(
        sum(o.square().sum() for o in fast), [vision, text, attention.vision_query.weight]
    )
    naive = attention.forward_naive(vision, text, mask)
    grads_naive = torch.autograd.grad(
        sum(o.square().sum() for o in naive), [vision, text, attention.vision_query.weight]
    )
    for a, b in zip(fast, naive):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_fast, grads_naive):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # heads in groups (1 and 3 heads per group: the last group is short) give the same numbers
    for budget in (2 * 300 * 12, 3 * 2 * 300 * 12):
        attention.max_logit_elements = budget
        grouped = attention(vision, text, mask)
        for a, b in zip(grouped, naive):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
