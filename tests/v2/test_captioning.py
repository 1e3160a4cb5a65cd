"""Causal mode and the captioning head: no look-ahead, text-independent image side, decoding, overfitting."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from glip.data.synthetic.vl import SyntheticVL
from glip.data.toy import deterministic_tiny_random
from glip.data.types import collate
from glip.models.anchor_view import AnchorView, anchor_view
from glip.models.captioning import GLIPForCaptioning
from glip.models.glip import build_model
from glip.preprocess import ImageBatch
from glip.text.tokenizer import CLS_ID, SEP_ID, get_tokenizer
from glip.v2.captioning import caption_losses, caption_scores

SIZE = 96


@pytest.fixture(scope="module")
def captioner() -> GLIPForCaptioning:
    torch.manual_seed(0)
    return GLIPForCaptioning(build_model(deterministic_tiny_random())).eval()


def _images(batch: int = 2, seed: int = 0) -> ImageBatch:
    generator = torch.Generator().manual_seed(seed)
    return ImageBatch(torch.randn(batch, 3, SIZE, SIZE, generator=generator), [(SIZE, SIZE)] * batch)


def _ids(text: str) -> torch.Tensor:
    return torch.tensor([get_tokenizer()(text)["input_ids"]])


@torch.no_grad()
def test_logits_of_token_t_ignore_later_tokens(captioner):
    images = _images(1)
    a = _ids("a red circle and a blue square")
    b = a.clone()
    b[0, 4:] = _ids("the green star above the yellow ring")[0, 1 : 1 + a.shape[1] - 4]
    mask = torch.ones_like(a)
    out_a, out_b = captioner(images, a, mask), captioner(images, b, mask)
    assert torch.equal(out_a.token_logits[:, :4], out_b.token_logits[:, :4])
    for la, lb in zip(out_a.glip.head.token_logits, out_b.glip.head.token_logits):
        assert torch.equal(la[..., :4], lb[..., :4])
    assert not torch.allclose(out_a.token_logits[:, 4:], out_b.token_logits[:, 4:])
    # without the causal mask the early positions do see the change (the test can fail)
    plain_a = captioner.glip(images, a, mask).head.fused_text
    plain_b = captioner.glip(images, b, mask).head.fused_text
    assert not torch.allclose(plain_a[:, :4], plain_b[:, :4])


@torch.no_grad()
def test_image_side_does_not_depend_on_text_in_causal_mode(captioner):
    images = _images(1)
    a, b = _ids("a red circle"), _ids("two large purple crosses behind a star")
    out_a = captioner.glip(images, a, torch.ones_like(a), causal=True)
    out_b = captioner.glip(images, b, torch.ones_like(b), causal=True)
    for name in ("features", "box_regression", "centerness"):
        for x, y in zip(getattr(out_a.head, name), getattr(out_b.head, name)):
            assert torch.equal(x, y), name
    plain_a = captioner.glip(images, a, torch.ones_like(a))
    plain_b = captioner.glip(images, b, torch.ones_like(b))
    assert not torch.equal(plain_a.head.features[0], plain_b.head.features[0])


@torch.no_grad()
def test_causal_text_encoder_equals_hf_decoder_mode(captioner):
    """Our causal mask on a padded batch == HF BertModel's own decoder (``is_decoder``) causal masking."""
    encoder = captioner.glip.text_encoder
    ids = _ids("a small striped green star left of a ring")
    length = ids.shape[1]
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, length, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)], dim=1)
    ours = encoder(padded, mask, causal=True).hidden[:, :length]
    decoder = copy.deepcopy(encoder.bert)
    decoder.config.is_decoder = True
    theirs = decoder(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    bidirectional = encoder(ids, torch.ones_like(ids)).hidden
    assert not torch.allclose(ours[:, :-1], bidirectional[:, :-1], atol=1e-3)


@torch.no_grad()
def test_beam_one_equals_greedy(captioner):
    images = _images(2, seed=3)
    greedy = captioner.greedy(images, max_length=6)
    assert captioner.beam_search(images, beam_size=1, max_length=6) == greedy
    assert all(len(seq) <= 6 and SEP_ID not in seq and CLS_ID not in seq for seq in greedy)
    wider = captioner.beam_search(images, beam_size=3, max_length=6)
    assert len(wider) == 2 and all(len(seq) <= 6 for seq in wider)


def test_rows_give_the_full_logits_of_those_positions_and_the_same_loss(captioner):
    """``rows``: the vocabulary projection only where it is needed (the loss: positions with a real next
    token; decoding: the last one) gives those rows of the full (B, T, V) logits, and the loss of the full
    logits with padding ignored; the gradients too. Columns of padding only (dropped by the text encoder)
    are allowed; a mask of another dtype or shape is refused."""
    data = SyntheticVL("caption", 3, seed=5, size=SIZE)
    batch = collate([data[i].sample for i in range(3)])  # captions of different lengths: padding
    mask = batch.attention_mask
    assert not bool(mask.all())
    rows = torch.zeros_like(mask, dtype=torch.bool)
    rows[:, :-1] = mask[:, 1:] != 0
    with torch.no_grad():
        full = captioner(batch.images, batch.input_ids, mask).token_logits  # (B, T, V)
        some = captioner(batch.images, batch.input_ids, mask, rows=rows).token_logits  # (N, V)
    assert some.shape == (int(rows.sum()), full.shape[-1])
    torch.testing.assert_close(some, full[rows], rtol=1e-5, atol=1e-5)
    pad = torch.zeros(3, 3, dtype=torch.long)  # 3 more columns of padding (e.g. pad_to_max)
    with torch.no_grad():
        wider = captioner(
            batch.images,
            torch.cat([batch.input_ids, pad], 1),
            torch.cat([mask, pad], 1),
            rows=torch.cat([rows, pad.bool()], 1),
        ).token_logits
        torch.testing.assert_close(wider, some)
        with pytest.raises(TypeError, match="bool mask"):
            captioner(batch.images, batch.input_ids, mask, rows=rows.long())

    def full_loss() -> torch.Tensor:  # the loss as computed before rows existed
        logits = captioner(batch.images, batch.input_ids, mask).token_logits[:, :-1]
        targets = batch.input_ids[:, 1:].clone()
        targets[mask[:, 1:] == 0] = -100
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    grads = []
    for loss_fn in (full_loss, lambda: caption_losses(captioner, batch, ground_weight=0.0)["loss_caption"]):
        captioner.zero_grad()
        loss = loss_fn()
        loss.backward()
        grads.append((loss.detach(), captioner.head.transform[0].weight.grad.clone()))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-4, atol=1e-7)
    captioner.zero_grad()


def test_caption_scores_by_hand():
    scores = caption_scores([[1, 2, 3], [4, 5], [7]], [[1, 2, 3], [4, 6, 5, 5], [8]])
    # pair 2: common {4, 5} = 2, precision 1, recall 0.5 -> F1 2/3
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["token_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    with pytest.raises(ValueError, match="predictions"):
        caption_scores([[1]], [])


def test_overfits_one_caption_and_decodes_it_with_grounded_words():
    torch.manual_seed(0)
    model = GLIPForCaptioning(build_model(deterministic_tiny_random()))
    data = SyntheticVL("caption", 1, seed=4, size=SIZE)
    batch = collate([data[0].sample])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    first = None
    # up to 150 steps, stopping once the caption is learnt (the trajectory depends on the thread count)
    for _ in range(150):
        losses = caption_losses(model, batch, ground_weight=0.0)
        value = float(losses["loss_caption"].detach())
        first = first if first is not None else value
        if value < 0.01 * first:
            break
        optimizer.zero_grad()
        losses["loss_caption"].backward()
        optimizer.step()
    model.eval()
    assert float(caption_losses(model, batch, ground_weight=0.0)["loss_caption"]) < 0.05 * first
    reference = get_tokenizer()(data[0].caption.text)["input_ids"][1:-1]
    prediction = model.generate(batch.images, max_length=len(reference) + 3, ground=True)[0]
    assert prediction.token_ids == reference
    words = [w.word for w in prediction.words]
    assert words == get_tokenizer().tokenize(data[0].caption.text)  # no word pieces in this vocabulary
    for word in prediction.words:
        if word.box is not None:
            x1, y1, x2, y2 = word.box
            assert 0 <= x1 <= x2 <= SIZE - 1 and 0 <= y1 <= y2 <= SIZE - 1


@torch.no_grad()
def test_caption_head_looks_at_the_image(captioner):
    images = _images(1)
    ids = _ids("a red circle and a blue square")
    output = captioner.glip(images, ids, torch.ones_like(ids), causal=True)
    words = captioner.word_embeddings()
    logits = captioner.head(output.head.fused_text, anchor_view(output), words)
    assert logits.shape == (1, ids.shape[1], words.shape[0])
    # the same fused text over other image features gives other next-token logits
    noisy = dataclasses.replace(output.head, features=[f + torch.randn_like(f) for f in output.head.features])
    other = captioner.head(
        output.head.fused_text, anchor_view(dataclasses.replace(output, head=noisy)), words
    )
    assert not torch.allclose(logits, other)


def test_last_mentioned_object_follows_the_strongly_grounded_tokens():
    head = copy.deepcopy(GLIPForCaptioning(build_model(deterministic_tiny_random())).head)
    centres = torch.tensor([[[0.1, 0.5], [0.5, 0.5], [0.9, 0.5]]])  # 3 anchors, left to right
    logits = torch.full((1, 3, 4), -10.0)  # 4 tokens: [CLS], "left" (grounds anchor 0), ",", "right"
    logits[0, 0, 1] = 10.0
    logits[0, 2, 3] = 10.0
    view = AnchorView(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2), logits, torch.zeros(1, 3), centres, (3,))
    with torch.no_grad():
        head.recency.copy_(torch.tensor([5.0, 3.0]))
    with torch.no_grad():
        where, strength = head.last_mentioned(view, 4)
    assert where.shape == (1, 4, 2) and strength.shape == (1, 4)
    assert strength[0, 0] < 0.01  # nothing mentioned yet at [CLS]
    assert torch.allclose(where[0, 1:3, 0], torch.tensor([0.1, 0.1]), atol=1e-2)  # "left", then ","
    assert abs(float(where[0, 3, 0]) - 0.9) < 1e-2  # "right"
