"""Tests for the Swin v1 backbone (glip/models/swin.py) against the official GLIP reference data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glip.models.swin import SwinTransformer, relative_position_index, window_attention_mask

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"
PREFIX = "backbone.body."

GLIP_T = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)
GLIP_L = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12)
REDUCED = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7)


def _reference_file(name: str) -> Path:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"reference file {path} not available")
    return path


@pytest.fixture(scope="module")
def reduced_swin() -> SwinTransformer:
    state = torch.load(_reference_file("reduced_glip_state_dict.pth"), weights_only=True)["model"]
    body = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX)}
    model = SwinTransformer(**REDUCED)
    model.load_state_dict(body, strict=True)
    return model.eval()


def test_reference_parity(reduced_swin: SwinTransformer) -> None:
    images = torch.load(_reference_file("reduced_glip_inputs.pth"), weights_only=True)["batched_images"]
    expected = torch.load(_reference_file("reduced_glip_outputs.pth"), weights_only=True)["backbone_body"]
    assert images.shape == (1, 3, 224, 288)
    with torch.no_grad():
        outputs = reduced_swin(images)
    assert len(outputs) == len(expected) == 4
    for out, ref in zip(outputs, expected):
        assert out.shape == ref.shape
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("manifest", "config"),
    [("glip_t_state_dict_keys.json", GLIP_T), ("glip_l_state_dict_keys.json", GLIP_L)],
    ids=["glip_t", "glip_l"],
)
def test_state_dict_matches_official_manifest(manifest: str, config: dict) -> None:
    entries = json.loads(_reference_file(manifest).read_text())
    expected = {
        k[len(PREFIX) :]: (tuple(shape), dtype) for k, shape, dtype in entries if k.startswith(PREFIX)
    }
    with torch.device("meta"):
        model = SwinTransformer(**config)
    got = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    mismatched = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert mismatched == {}
    assert "norm0.weight" not in got and "norm3.bias" in got


def test_window_mask_by_hand() -> None:
    # 4x4 map, window 2, shift 1. Region slices per axis (0,-2), (-2,-1), (-1,None) -> rows/cols {0,1}, {2}, {3}
    # get region 0, 1, 2; id = 3 * r(y) + r(x). Windows in row-major order:
    #   w0 rows 0-1 cols 0-1: ids 0 0 / 0 0      -> one region, no masking
    #   w1 rows 0-1 cols 2-3: ids 1 2 / 1 2      -> tokens {0,2} vs {1,3}
    #   w2 rows 2-3 cols 0-1: ids 3 3 / 6 6      -> tokens {0,1} vs {2,3}
    #   w3 rows 2-3 cols 2-3: ids 4 5 / 7 8      -> all different
    m = -100.0
    expected = torch.tensor(
        [
            [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
            [[0, m, 0, m], [m, 0, m, 0], [0, m, 0, m], [m, 0, m, 0]],
            [[0, 0, m, m], [0, 0, m, m], [m, m, 0, 0], [m, m, 0, 0]],
            [[0, m, m, m], [m, 0, m, m], [m, m, 0, m], [m, m, m, 0]],
        ]
    )
    mask = window_attention_mask(4, 4, window_size=2, shift=1)
    assert mask.shape == (4, 4, 4)
    assert mask.dtype == torch.float32
    torch.testing.assert_close(mask, expected, atol=0, rtol=0)
    # A 3x3 map is padded to 4x4 before the regions are assigned, so the mask is the same.
    torch.testing.assert_close(window_attention_mask(3, 3, window_size=2, shift=1), expected, atol=0, rtol=0)
    # No shift -> all zeros (one entry per window of the padded 7x7 -> 3x3 windows of size 3).
    unshifted = window_attention_mask(7, 7, window_size=3, shift=0)
    assert unshifted.shape == (9, 9, 9)
    assert torch.count_nonzero(unshifted) == 0


def test_relative_position_index_by_hand() -> None:
    # w = 2: tokens (0,0) (0,1) (1,0) (1,1); index = (dy + 1) * 3 + (dx + 1) with (dy, dx) = p_i - p_j.
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    index = relative_position_index(2)
    assert index.dtype == torch.int64
    assert torch.equal(index, expected)


def test_shifted_window_mask_is_used() -> None:
    # 4x4 map, window 2, shift 1: after the roll by -1, the bottom-right window holds the original positions
    # (3, 3), (3, 0), (0, 3), (0, 0), which all belong to different regions. A change at (3, 3) must therefore
    # not reach the other three (attention is the only place tokens mix), unless the mask is removed.
    torch.manual_seed(0)
    model = SwinTransformer(
        embed_dim=8, depths=(2,), num_heads=(2,), window_size=2, drop_path_rate=0.0
    ).eval()
    block0, block1 = model.layers[0].blocks
    assert block0.shift_size == 0 and block1.shift_size == 1
    x = torch.randn(1, 16, 8)
    x2 = x.clone()
    x2[0, 3 * 4 + 3] = torch.randn(8) * 3.0  # (a constant shift would be removed by norm1)
    mask = window_attention_mask(4, 4, 2, 1)
    with torch.no_grad():
        diff = (block1(x2, 4, 4, mask) - block1(x, 4, 4, mask)).abs().amax(-1).view(4, 4)
        diff_unmasked = block1(x2, 4, 4, torch.zeros_like(mask)) - block1(x, 4, 4, torch.zeros_like(mask))
    diff_unmasked = diff_unmasked.abs().amax(-1).view(4, 4)
    others = [(3, 0), (0, 3), (0, 0)]
    assert all(diff[p] < 1e-6 for p in others)
    assert all(diff_unmasked[p] > 1e-3 for p in others)
    assert diff[3, 3] > 1e-3
    # Tokens in other windows never see (3, 3).
    assert diff[1, 1] == 0 and diff[2, 2] == 0


@pytest.mark.parametrize("size", [(70, 90), (33, 31)])
def test_output_shapes_odd_input(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = SwinTransformer(embed_dim=8, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=7).eval()
    h, w = size
    with torch.no_grad():
        outputs = model(torch.randn(2, 3, h, w))
    hi, wi = -(-h // 4), -(-w // 4)  # patch embed pads to a multiple of 4
    expected = []
    for i in range(4):
        expected.append((2, 8 * 2**i, hi, wi))
        hi, wi = (hi + 1) // 2, (wi + 1) // 2  # patch merging pads to even
    assert [tuple(o.shape) for o in outputs] == expected
    assert all(torch.isfinite(o).all() for o in outputs)


def test_frozen_stages_and_train_mode() -> None:
    model = SwinTransformer(
        embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=7, frozen_stages=2
    )
    model.train()
    # official swint.py semantics: >= 0 freezes patch_embed, >= 2 also freezes layers[0 .. frozen_stages - 2].
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.layers[0].parameters())
    assert all(p.requires_grad for p in model.layers[1].parameters())
    assert not model.patch_embed.training and not model.layers[0].training
    assert model.layers[1].training and model.layers[1].blocks[0].drop_path.training


def test_drop_path_rates_and_checkpoint_equivalence() -> None:
    torch.manual_seed(0)
    model = SwinTransformer(
        embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4, drop_path_rate=0.7
    )
    rates = [blk.drop_path.drop_prob for layer in model.layers for blk in layer.blocks]
    assert rates == pytest.approx([0.1 * i for i in range(8)])
    # Gradient checkpointing must not change the numbers (drop path off for determinism).
    small = {"embed_dim": 8, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 4), "window_size": 4}
    model_ckpt = SwinTransformer(**small, drop_path_rate=0.0, use_checkpoint=True)
    model_plain = SwinTransformer(**small, drop_path_rate=0.0)
    model_plain.load_state_dict(model_ckpt.state_dict())
    x = torch.randn(1, 3, 40, 36)
    outs_a = model_ckpt.train()(x)
    outs_b = model_plain.train()(x)
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b)
    sum(o.sum() for o in outs_a).backward()
    assert model_ckpt.patch_embed.proj.weight.grad is not None


def test_chunked_inference_equals_whole_map() -> None:
    """Without autograd, window attention (in chunks of windows, shifted masks not aligned to a chunk) and the
    MLP (in chunks of tokens) give the same stage outputs as the whole-map computation."""
    torch.manual_seed(0)
    model = SwinTransformer(embed_dim=8, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=7).eval()
    images = torch.randn(2, 3, 150, 170)  # stage 1: 38 x 43 tokens -> 6 x 7 = 42 windows per image
    with torch.no_grad():
        whole = model(images)
    blocks = [m for m in model.modules() if hasattr(m, "tokens_per_chunk")]
    attentions = [m for m in model.modules() if hasattr(m, "windows_per_chunk")]
    assert blocks and attentions
    for block in blocks:
        block.tokens_per_chunk = 97
    for attention in attentions:
        attention.windows_per_chunk = 5  # 84 windows: chunks start at indices that are not multiples of 42
    with torch.no_grad():
        chunked = model(images)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
