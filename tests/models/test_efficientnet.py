"""EfficientNet-Lite0 backbone (the ``tiny`` preset): frozen stages."""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("timm")

from glip.engine.tuning import apply_tuning  # noqa: E402
from glip.models.efficientnet import EfficientNetBackbone  # noqa: E402


def test_frozen_stages_keep_weights_and_statistics() -> None:
    torch.manual_seed(0)
    model = EfficientNetBackbone(pretrained=False, frozen_stages=2)
    model.train()
    frozen = [model.body.conv_stem, model.body.bn1, model.body.blocks[0], model.body.blocks[1]]
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in model.body.blocks[2].parameters())
    assert not any(m.training for m in frozen) and model.body.blocks[2].training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    features = model(torch.rand(2, 3, 64, 64))
    sum(f.sum() for f in features).backward()
    after = model.state_dict()
    # batch-norm running statistics move only outside the frozen part
    assert torch.equal(before["body.bn1.running_mean"], after["body.bn1.running_mean"])
    assert torch.equal(before["body.blocks.1.0.bn1.running_mean"], after["body.blocks.1.0.bn1.running_mean"])
    assert not torch.equal(
        before["body.blocks.2.0.bn1.running_mean"], after["body.blocks.2.0.bn1.running_mean"]
    )
    assert model.body.blocks[1][0].conv_pw.weight.grad is None
    assert model.body.blocks[2][0].conv_pw.weight.grad is not None


def test_frozen_stages_survive_tuning_and_reach_the_model() -> None:
    from glip.config import get_preset
    from glip.models.glip import build_model

    preset = get_preset("tiny")
    preset = dataclasses.replace(
        preset,
        backbone=dataclasses.replace(preset.backbone, pretrained=False, frozen_stages=0),
        text=dataclasses.replace(preset.text, pretrained=None),
    )
    model = build_model(preset)
    trainable = apply_tuning(model, "full")  # sets requires_grad everywhere, then re-freezes the stages
    assert not any(name.startswith("backbone.body.conv_stem.") for name in trainable)
    assert any(name.startswith("backbone.body.blocks.0.") for name in trainable)
    # -1 (the default) freezes nothing; past the last block is a readable error
    assert all(p.requires_grad for p in EfficientNetBackbone(pretrained=False).parameters())
    with pytest.raises(ValueError, match="frozen_stages=7"):
        EfficientNetBackbone(pretrained=False, frozen_stages=7)
