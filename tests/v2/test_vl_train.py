"""The joint VL training loop: task weights select what trains, aligned datasets, clear errors."""

from __future__ import annotations

import pytest
import torch

from glip.data.synthetic.vl import ANSWERS, SyntheticVL
from glip.data.toy import deterministic_tiny_random
from glip.models.captioning import GLIPForCaptioning
from glip.models.glip import build_model
from glip.v2.vl_train import VLTrainConfig, train_vl
from glip.v2.vqa import GLIPForVQA

SIZE = 96


def _setup():
    torch.manual_seed(0)
    glip = build_model(deterministic_tiny_random())
    data = {task: SyntheticVL(task, 4, seed=0, size=SIZE) for task in ("detection", "vqa", "caption")}
    return glip, GLIPForVQA(glip, ANSWERS), GLIPForCaptioning(glip), data


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_weights_choose_the_trained_parts():
    glip, vqa, captioner, data = _setup()
    vqa_head, caption_head, glip_before = _state(vqa.head), _state(captioner.head), _state(glip)
    config = VLTrainConfig(steps=2, batch_size=2, vqa_weight=0.0, caption_weight=0.0, log_every=1)
    history = train_vl(glip, data, config, vqa=vqa, captioner=captioner)
    assert [row["step"] for row in history] == [1.0, 2.0]
    assert set(history[-1]) >= {"loss_token", "loss_giou", "loss_centerness"}
    assert not any(k.startswith(("loss_vqa", "loss_caption")) for k in history[-1])
    assert all(torch.equal(v, _state(vqa.head)[k]) for k, v in vqa_head.items())
    assert all(torch.equal(v, _state(captioner.head)[k]) for k, v in caption_head.items())
    assert not torch.equal(glip_before["head.bbox_pred.weight"], glip.state_dict()["head.bbox_pred.weight"])

    config = VLTrainConfig(steps=1, batch_size=2, detection_weight=0.0, log_every=1)
    history = train_vl(glip, data, config, vqa=vqa, captioner=captioner)
    assert {"loss_vqa", "loss_vqa_token", "loss_caption", "loss_caption_token"} <= set(history[-1])
    assert "loss_token" not in history[-1]
    assert not torch.equal(vqa_head["mlp.0.weight"], vqa.head.state_dict()["mlp.0.weight"])
    assert not torch.equal(caption_head["bias"], captioner.head.state_dict()["bias"])


def test_errors_name_the_problem():
    glip, vqa, captioner, data = _setup()
    off = VLTrainConfig(steps=1, detection_weight=0.0, vqa_weight=0.0, caption_weight=0.0)
    with pytest.raises(ValueError, match="nothing to train"):
        train_vl(glip, data, off)
    with pytest.raises(ValueError, match="no dataset"):
        train_vl(glip, {"detection": data["detection"]}, VLTrainConfig(steps=1), vqa=vqa, captioner=captioner)
    other = GLIPForVQA(build_model(deterministic_tiny_random()), ANSWERS)
    with pytest.raises(ValueError, match="same GLIP"):
        train_vl(glip, data, VLTrainConfig(steps=1), vqa=other, captioner=captioner)
    short = {**data, "vqa": SyntheticVL("vqa", 3, seed=0, size=SIZE)}
    with pytest.raises(ValueError, match="aligned"):
        train_vl(glip, short, VLTrainConfig(steps=1), vqa=vqa, captioner=captioner)
