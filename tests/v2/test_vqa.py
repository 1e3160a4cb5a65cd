"""VQA head: reads the image where the question grounds, counts its boxes, overfits a few questions (answers,
entity tokens, entity boxes), clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from glip.data.synthetic.vl import ANSWERS, SyntheticVL
from glip.data.toy import deterministic_tiny_random
from glip.models.anchor_view import anchor_view
from glip.models.glip import build_model
from glip.models.vqa import COUNT_THRESHOLDS, grounded_counts
from glip.postprocess import postprocess_image
from glip.v2.vqa import GLIPForVQA, VQAHead, collate_vqa, vqa_losses

SIZE = 96


def _tiny_output(seed: int = 0):
    torch.manual_seed(seed)
    model = GLIPForVQA(build_model(deterministic_tiny_random()), ANSWERS, dropout=0.0).eval()
    data = SyntheticVL("vqa", 2, seed=0, size=SIZE)
    batch = collate_vqa([data[0], data[1]], ANSWERS)
    with torch.no_grad():
        output = model.glip(batch.batch.images, batch.batch.input_ids, batch.batch.attention_mask)
    return model, output


def test_head_reads_the_fused_question_and_the_image_where_it_grounds():
    model, output = _tiny_output()
    head = model.head
    with torch.no_grad():
        logits = head(output)
        assert logits.shape == (2, len(ANSWERS))
        weights = head.token_weights(output.head.fused_text, output.text.mask)
        real = output.text.mask[:, : weights.shape[1]].bool()
        assert torch.allclose(weights.sum(dim=1), torch.ones(2)) and bool((weights[~real] == 0).all())
        # the image side: the tower features, the FPN features and the grounding logits each reach the answer
        for name in ("features", "token_logits"):
            noisy = [t + torch.randn_like(t) for t in getattr(output.head, name)]
            changed = dataclasses.replace(output.head, **{name: noisy})
            assert not torch.allclose(head(dataclasses.replace(output, head=changed)), logits)
        moved = dataclasses.replace(output, fpn=[f + torch.randn_like(f) for f in output.fpn])
        assert not torch.allclose(head(moved), logits)
    with pytest.raises(ValueError, match="at least 2 answers"):
        VQAHead(8, 1, 4, 4)


def test_grounded_counts_are_the_boxes_the_grounding_gives_above_each_threshold():
    _, output = _tiny_output()
    view = anchor_view(output)
    sizes = list(view.level_sizes)
    off = torch.full((2, sum(sizes)), -12.0)
    assert torch.equal(grounded_counts(output, off, sizes), torch.zeros(2, len(COUNT_THRESHOLDS)))
    counts = grounded_counts(output, torch.zeros(2, sum(sizes)).normal_(0, 3), sizes)
    assert counts.shape == (2, len(COUNT_THRESHOLDS)) and bool((counts >= 0).all())
    assert bool((counts[:, 1:] <= counts[:, :-1]).all())  # fewer boxes above a higher threshold
    # the same as the model's own post-processing of that grounding as one phrase
    grounding = torch.zeros(2, sum(sizes)).normal_(0, 3)
    detections = postprocess_image(
        [level[:, None] for level in grounding[0].split(sizes)],
        [r[0] for r in output.head.box_regression],
        [c[0] for c in output.head.centerness],
        output.anchors,
        output.image_sizes[0],
        {1: [0]},
    )
    expected = [(detections.scores > t).sum().item() for t in COUNT_THRESHOLDS]
    assert grounded_counts(output, grounding, sizes)[0].tolist() == expected


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
    assert float(last["loss_vqa_entity"].detach()) < first["loss_vqa_entity"]
    with torch.no_grad():  # the head's token weights moved to the entity's tokens
        output = model(batch.batch.images, batch.batch.input_ids, batch.batch.attention_mask)
        weights = model.head.token_weights(output.glip.head.fused_text, output.glip.text.mask)
    entity = torch.stack([t.token_map[:, : weights.shape[1]].any(dim=0) for t in batch.batch.targets])
    assert bool(((weights * entity).sum(dim=1) > 0.5).all())
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
    assert set(losses) == {"loss_vqa", "loss_vqa_entity"}
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
