"""VQA head: reads the start token, overfits a few questions, grounds the entity, clear errors."""

from __future__ import annotations

import pytest
import torch

from glip.data.synthetic.vl import ANSWERS, SyntheticVL
from glip.data.toy import deterministic_tiny_random
from glip.models.glip import build_model
from glip.v2.vqa import GLIPForVQA, VQAHead, collate_vqa, vqa_losses

SIZE = 96


def test_head_reads_only_the_start_token():
    head = VQAHead(8, 5).eval()
    text = torch.randn(2, 4, 8)
    changed = text.clone()
    changed[:, 1:] = torch.randn(2, 3, 8)
    assert torch.equal(head(text), head(changed))
    changed[:, 0] += 1.0
    assert not torch.allclose(head(text), head(changed))
    with pytest.raises(ValueError, match="at least 2 answers"):
        VQAHead(8, 1)


def test_overfits_a_few_questions_and_grounds_their_entities():
    torch.manual_seed(0)
    model = GLIPForVQA(build_model(deterministic_tiny_random()), ANSWERS, dropout=0.0)
    data = SyntheticVL("vqa", 4, seed=1, size=SIZE)
    items = [data[k] for k in range(4)]
    batch = collate_vqa(items, ANSWERS)
    assert len(set(batch.answer_ids.tolist())) > 1  # not a constant-answer shortcut
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    first = None
    for _ in range(40):
        losses = vqa_losses(model, batch, ground_weight=1.0)
        first = first if first is not None else {k: float(v.detach()) for k, v in losses.items()}
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    model.eval()
    predictions = model.answer(batch.batch.images, batch.batch.captions, [it.question.entity for it in items])
    assert [p.answer for p in predictions] == [it.answer for it in items]
    last = vqa_losses(model, batch, ground_weight=1.0)
    assert float(last["loss_vqa"].detach()) < 0.05 * first["loss_vqa"]
    assert float(last["loss_vqa_token"].detach()) < first["loss_vqa_token"]
    for prediction in predictions:
        assert prediction.entity_boxes is not None
        boxes = prediction.entity_boxes.boxes
        assert ((boxes >= 0) & (boxes <= SIZE - 1)).all()


def test_ground_weight_zero_is_answer_loss_only_and_reaches_the_fused_text():
    torch.manual_seed(0)
    model = GLIPForVQA(build_model(deterministic_tiny_random()), ANSWERS)
    data = SyntheticVL("vqa", 2, seed=0, size=SIZE)
    batch = collate_vqa([data[0], data[1]], ANSWERS)
    losses = vqa_losses(model, batch, ground_weight=0.0)
    assert set(losses) == {"loss_vqa"}
    losses["loss_vqa"].backward()
    fusion = model.glip.head.blocks[0].fusion
    assert fusion.text_gamma.grad is not None and fusion.text_gamma.grad.abs().sum() > 0
    assert model.glip.head.bbox_pred.weight.grad is None  # no box loss without grounding


def test_bad_inputs_raise():
    torch.manual_seed(0)
    model = GLIPForVQA(build_model(deterministic_tiny_random()), ANSWERS).eval()
    data = SyntheticVL("vqa", 2, seed=0, size=SIZE)
    with pytest.raises(ValueError, match="not in the answer vocabulary"):
        collate_vqa([data[0]], ("yes", "no"))
    with pytest.raises(ValueError, match="duplicates"):
        GLIPForVQA(model.glip, ("red", "red"))
    batch = collate_vqa([data[0], data[1]], ANSWERS)
    with pytest.raises(ValueError, match="2 images, 1 questions"):
        model.answer(batch.batch.images, batch.batch.captions[:1], [None])
