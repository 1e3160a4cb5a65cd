"""GLIPv2 pre-training heads owned by the model: config, save / load, strictness, the tied MLM head (training with
them: tests/losses/test_criterion.py)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from glip.config import GLIPConfig, V2Config
from glip.data.toy import SquaresDataset, deterministic_tiny_random
from glip.data.types import collate
from glip.models.glip import build_model
from glip.models.pretrain_heads import MLMHead, ensure_v2_heads
from glip.weights.loading import load_model, save_model


def _model(v2: V2Config | None = None):
    torch.manual_seed(0)
    config = deterministic_tiny_random()
    return build_model(config if v2 is None else dataclasses.replace(config, v2=v2))


def test_default_configs_have_no_v2_heads():
    model = _model()
    assert model.v2_heads is None
    assert not any(k.startswith("v2_heads") for k in model.state_dict())
    old = model.config.to_dict()
    old.pop("v2")  # a config.json written before GLIPv2
    assert GLIPConfig.from_dict(old) == model.config
    with pytest.raises(ValueError, match="no GLIPv2 'inter' head"):
        batch = collate([SquaresDataset(1, size=64)[0]])
        model(batch.images, batch.input_ids, batch.attention_mask, v2=("inter",))


def test_heads_from_config_save_and_load_strictly(tmp_path):
    model = _model(V2Config(inter_dim=16, mlm_head=True))
    assert sorted(model.v2_heads) == ["inter", "mlm"]
    assert model.v2_heads["inter"].region_proj.weight.shape == (16, 64)
    with torch.no_grad():
        model.v2_heads["inter"].log_scale.fill_(1.5)
    save_model(model, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["v2"]["inter_dim"] == 16
    loaded = load_model(tmp_path / "m")
    assert loaded.v2_heads["inter"].log_scale.item() == 1.5
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_tied_head_uses_the_word_embeddings():
    torch.manual_seed(0)
    model = build_model(deterministic_tiny_random())
    ensure_v2_heads(model, mlm=True)
    assert model.config.v2.mlm_head
    keys = set(model.state_dict())
    assert "v2_heads.mlm.bias" in keys and not any(k.startswith("v2_heads.mlm.decoder") for k in keys)
    head = model.v2_heads["mlm"]
    embeddings = model.text_encoder.bert.embeddings.word_embeddings.weight
    text = torch.randn(1, 3, embeddings.shape[1])
    logits = head(text, embeddings)
    assert logits.shape == (1, 3, embeddings.shape[0])
    with torch.no_grad():
        embeddings[7] += 1.0
    assert not torch.allclose(head(text, embeddings)[..., 7], logits[..., 7])
    with pytest.raises(ValueError, match="word embeddings"):
        head(text, embeddings[:, :-1])
    untied = MLMHead(8, 11, tied=False)
    assert untied(torch.randn(2, 4, 8)).shape == (2, 4, 11)
