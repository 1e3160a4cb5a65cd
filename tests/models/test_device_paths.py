"""Memory-bounding loops run on CPU only, and the fusion forward does not synchronise with the host off CPU.

No accelerator is needed: the ``meta`` device stands in for one (every op runs shape-only, and a host
synchronisation such as ``bool(tensor)`` / ``.item()`` shows up as an ``aten._local_scalar_dense`` call or
fails). Ops are counted with a ``TorchDispatchMode``.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from glip.models import dyhead
from glip.models.fusion import BiMultiHeadAttention
from glip.models.swin import SwinTransformerBlock, WindowAttention


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.calls[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _fusion_inputs(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    vision = torch.randn(1, 50, 16, generator=generator).to(device)
    text = torch.randn(1, 6, 12, generator=generator).to(device)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]]).to(device)
    return vision, text, mask


def test_fusion_groups_heads_on_cpu_only_and_never_syncs_off_cpu():
    torch.manual_seed(0)
    attn = BiMultiHeadAttention(16, 12, 32, 4, 0.0).eval()
    attn.max_logit_elements = 50 * 6  # one head per group on CPU
    with torch.no_grad(), OpCounter() as cpu:
        attn(*_fusion_inputs("cpu"))
    # logits + image output, per head (CPU inference accumulates the image output in place after the first)
    assert cpu.calls["baddbmm"] + cpu.calls["baddbmm_"] == 2 * 4 and cpu.calls["baddbmm_"] == 3
    meta_attn = BiMultiHeadAttention(16, 12, 32, 4, 0.0).eval().to("meta")
    meta_attn.max_logit_elements = 50 * 6
    with torch.no_grad(), OpCounter() as meta:
        delta_vision, delta_text = meta_attn(*_fusion_inputs("meta"))
    assert meta.calls["baddbmm"] == 2  # all heads at once
    assert meta.calls["_local_scalar_dense"] == 0 and meta.calls["cat"] == 1
    assert meta.calls["masked_fill"] == 1  # the official text mask, added without looking at it
    assert delta_vision.shape == (1, 50, 16) and delta_text.shape == (1, 6, 12)


def test_fusion_off_cpu_path_gives_the_cpu_numbers():
    """The accelerator path (all heads, mask always added) computed on CPU equals the grouped CPU path."""
    torch.manual_seed(0)
    attn = BiMultiHeadAttention(16, 12, 32, 4, 0.0).eval()
    vision, text, mask = _fusion_inputs("cpu")
    with torch.no_grad():
        attn.max_logit_elements = 50 * 6
        grouped = attn(vision, text, mask)
        attn.max_logit_elements = 1 << 22
        whole = attn(vision, text, mask)
        naive = attn.forward_naive(vision, text, mask)
    for a, b, c in zip(grouped, whole, naive):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)


def test_deformable_bands_on_cpu_only(monkeypatch):
    monkeypatch.setattr(dyhead, "DEFORM_COLUMNS_MAX_ELEMENTS", 8 * 9 * 10 * 2)  # two rows per band
    generator = torch.Generator().manual_seed(0)
    shapes = {"x": (1, 8, 10, 10), "offset": (1, 18, 10, 10), "mask": (1, 9, 10, 10), "weight": (4, 8, 3, 3)}
    cpu_args = {k: torch.randn(*s, generator=generator) for k, s in shapes.items()}
    with torch.no_grad(), OpCounter() as cpu:
        out = dyhead.deform_conv3x3_grid_sample(**cpu_args, bias=None, stride=1)
    # CPU inference: each band's matmul writes into one output buffer (no torch.cat)
    assert cpu.calls["grid_sampler_2d"] == 5 and cpu.calls["cat"] == 0
    meta_args = {k: v.to("meta") for k, v in cpu_args.items()}
    with torch.no_grad(), OpCounter() as meta:
        meta_out = dyhead.deform_conv3x3_grid_sample(**meta_args, bias=None, stride=1)
    assert meta.calls["grid_sampler_2d"] == 1 and meta.calls["cat"] == 0
    assert meta_out.shape == out.shape == (1, 4, 10, 10)


def test_swin_chunks_on_cpu_only():
    torch.manual_seed(0)
    block = SwinTransformerBlock(8, 2, window_size=2, shift_size=0).eval()
    block.tokens_per_chunk = 16
    block.attn.windows_per_chunk = 4
    x = torch.randn(1, 64, 8)
    with torch.no_grad(), OpCounter() as cpu:
        out = block(x, 8, 8, None)
    assert cpu.calls["addmm"] == 2 * 4 + 2 * 4  # qkv + proj per 4-window chunk, fc1 + fc2 per token chunk
    block = block.to("meta")
    assert isinstance(block.attn, WindowAttention)
    with torch.no_grad(), OpCounter() as meta:
        meta_out = block(x.to("meta"), 8, 8, None)
    assert meta.calls["addmm"] == 4  # qkv, proj, fc1, fc2 once each
    assert meta_out.shape == out.shape


def test_fp16_autocast_dtype_plumbing():
    """The inference forward under fp16 autocast (the predictor's ``precision="fp16"`` on CUDA), run on CPU
    through glip.runtime.autocast: every op accepts the mixed dtypes, text padding is masked without
    overflow, and the logits stay finite and close to fp32. (Not run on a GPU here: none was lent.)"""
    import glip
    from glip.preprocess import ImageBatch
    from glip.runtime import autocast

    torch.manual_seed(0)
    model = glip.build_model(glip.get_preset("tiny_random")).eval()
    images = ImageBatch(torch.randn(2, 3, 128, 160), [(128, 160), (120, 150)])
    ids = torch.tensor([[101, 2003, 1037, 4937, 1012, 102], [101, 4937, 102, 0, 0, 0]])
    with torch.no_grad():
        reference = model(images, ids, (ids > 0).long())
        with autocast(torch.device("cpu"), "fp16"):
            output = model(images, ids, (ids > 0).long())
    for ours, theirs in zip(output.head.token_logits, reference.head.token_logits):
        assert torch.isfinite(ours).all()
        torch.testing.assert_close(ours.float(), theirs, atol=2e-2, rtol=2e-2)
    detections = model.postprocess(output, {1: [1, 2], 2: [3]})
    assert len(detections) == 2
