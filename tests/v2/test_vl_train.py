"""The joint VL training loop: task weights select what trains, aligned datasets, clear errors."""

from __future__ import annotations

import pytest
import torch

from glip.data.synthetic.vl import ANSWERS, SyntheticVL
from glip.data.toy import deterministic_tiny_random
from glip.data.types import collate
from glip.models.captioning import GLIPForCaptioning
from glip.models.glip import build_model
from glip.v2.vl_train import VLTrainConfig, _shared_prompt, eval_frozen_parts, train_vl
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


def test_frozen_parts_run_in_eval_mode_and_a_shared_prompt_is_encoded_once():
    """Frozen backbone and text encoder: eval mode (no dropout, fixed batch-norm statistics) while the rest
    trains; the detection prompt that every image shares goes through the text encoder once per step."""
    glip, vqa, captioner, data = _setup()
    for module in (glip.backbone, glip.text_encoder):
        module.requires_grad_(False)
    seen: dict[str, list[tuple[bool, int]]] = {"text": [], "backbone": [], "head": []}
    for key, module in (("text", glip.text_encoder), ("backbone", glip.backbone), ("head", glip.head)):
        module.register_forward_pre_hook(
            lambda m, args, key=key: seen[key].append(
                (m.training, args[1].shape[0] if key == "head" else args[0].shape[0])
            )
        )
    config = VLTrainConfig(steps=2, batch_size=2, vqa_weight=0.0, caption_weight=0.0, log_every=1)
    history = train_vl(glip, data, config, vqa=vqa, captioner=captioner)
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in history)
    assert seen["text"] == [(False, 1), (False, 1)]  # one prompt, encoded once per step
    assert seen["backbone"] and all(not training for training, _ in seen["backbone"])
    assert seen["head"] and all(training for training, _ in seen["head"])

    # the whole GLIP frozen (only the task heads learn): GLIP in eval mode, the heads in train mode
    glip.requires_grad_(False)
    modes: list[bool] = []
    vqa.head.register_forward_pre_hook(lambda m, args: modes.append(m.training))
    seen = {key: [] for key in seen}
    config = VLTrainConfig(steps=1, batch_size=2, detection_weight=0.0, ground_weight=0.0, log_every=1)
    train_vl(glip, data, config, vqa=vqa, captioner=captioner)
    assert seen["head"] and not any(training for training, _ in seen["head"])
    assert modes == [True]


def test_eval_frozen_parts_names_the_outermost_frozen_modules():
    glip = build_model(deterministic_tiny_random()).train()
    glip.text_encoder.requires_grad_(False)
    glip.head.blocks[0].requires_grad_(False)
    frozen = eval_frozen_parts(glip)
    assert {"head.blocks.0", "text_encoder"} <= set(frozen)
    assert not any(name.startswith(("head.blocks.0.", "text_encoder.")) for name in frozen)
    assert not glip.text_encoder.bert.encoder.layer[0].training and glip.head.blocks[1].training
    glip.requires_grad_(False)
    assert eval_frozen_parts(glip) == [""]
    assert not any(m.training for m in glip.modules())


def test_precomputed_text_features_give_the_same_output():
    glip = build_model(deterministic_tiny_random()).eval()
    batch = collate([SyntheticVL("detection", 2, seed=0, size=SIZE)[i].sample for i in range(2)])
    with torch.no_grad():
        plain = glip(batch.images, batch.input_ids, batch.attention_mask)
        text = glip.encode_text(batch.input_ids, batch.attention_mask)
        given = glip(batch.images, batch.input_ids, batch.attention_mask, text=text)
    for a, b in zip(plain.head.token_logits, given.head.token_logits):
        assert torch.equal(a, b)


def test_a_shared_prompt_encoded_once_equals_each_row_encoded():
    """Padded rows (trimmed to the longest real prompt): the one encoding, expanded, is each row's encoding;
    rows that differ, a single row or a text encoder with dropout on are encoded as they come (None)."""
    glip = build_model(deterministic_tiny_random())
    glip.text_encoder.requires_grad_(False)
    ids = torch.tensor([[101, 2417, 4418, 1012, 102, 0, 0]] * 3)
    mask = (ids != 0).long()
    glip.train()
    assert _shared_prompt(glip, ids, mask) is None  # dropout on
    eval_frozen_parts(glip)
    shared = _shared_prompt(glip, ids, mask)
    each = glip.encode_text(ids, mask)
    assert shared is not None and shared.hidden.shape == each.hidden.shape == (
        3,
        5,
        glip.text_encoder.hidden_size,
    )
    torch.testing.assert_close(shared.hidden, each.hidden)
    torch.testing.assert_close(shared.embedded, each.embedded)
    assert torch.equal(shared.mask, each.mask)
    other = ids.clone()
    other[1, 2] = 2300
    assert _shared_prompt(glip, other, mask) is None
    assert _shared_prompt(glip, ids[:1], mask[:1]) is None
