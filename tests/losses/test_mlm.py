"""L_mlm: BERT masking statistics, special tokens and padding never masked, overfitting (the tied head:
tests/models/test_pretrain_heads.py)."""

from __future__ import annotations

import pytest
import torch

from glip.data.toy import SquaresDataset, deterministic_tiny_random
from glip.data.types import collate
from glip.losses.mlm import IGNORE_INDEX, bert_special_ids, mask_tokens, mlm_loss
from glip.models.glip import build_model
from glip.models.pretrain_heads import ensure_v2_heads

MASK, SPECIAL = bert_special_ids()
VOCAB = 30522


def _many_captions(rows: int = 400, length: int = 120):
    """[CLS] w ... w [SEP] [PAD]*: real words are ids 1000..29999, 10-30 pad tokens per row."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (rows, length), generator=generator)
    mask = torch.ones(rows, length, dtype=torch.int64)
    for r in range(rows):
        real = length - int(torch.randint(10, 31, (1,), generator=generator))
        ids[r, 0], ids[r, real - 1] = 101, 102
        ids[r, real:] = 0
        mask[r, real:] = 0
        ids[r, 5] = 100  # an [UNK]: special, never chosen
    return ids, mask


def test_bert_special_ids():
    assert MASK == 103
    assert {0, 100, 101, 102, 103} <= set(SPECIAL)


def test_masking_statistics_match_the_recipe():
    ids, mask = _many_captions()
    masked, labels = mask_tokens(ids, mask, VOCAB, MASK, SPECIAL, generator=torch.Generator().manual_seed(1))
    candidates = (mask > 0) & ~torch.isin(ids, torch.tensor(SPECIAL))
    chosen = labels != IGNORE_INDEX
    n = int(candidates.sum())
    assert n > 30000
    assert int(chosen.sum()) / n == pytest.approx(0.15, abs=0.01)
    assert torch.equal(labels[chosen], ids[chosen])  # labels are the original tokens
    k = int(chosen.sum())
    to_mask = int((masked[chosen] == MASK).sum()) / k
    unchanged = int((masked[chosen] == ids[chosen]).sum()) / k
    random = 1 - to_mask - unchanged
    assert to_mask == pytest.approx(0.8, abs=0.02)
    assert random == pytest.approx(0.1, abs=0.015)
    assert unchanged == pytest.approx(0.1, abs=0.015)
    # random replacements are real vocabulary tokens, never special ones
    replaced = masked[chosen & (masked != MASK) & (masked != ids)]
    assert not bool(torch.isin(replaced, torch.tensor(SPECIAL)).any()) and int(replaced.max()) < VOCAB


def test_special_tokens_and_padding_are_never_masked():
    ids, mask = _many_captions(rows=50)
    candidates = (mask > 0) & ~torch.isin(ids, torch.tensor(SPECIAL))
    for seed in range(5):
        masked, labels = mask_tokens(
            ids, mask, VOCAB, MASK, SPECIAL, probability=0.9, generator=torch.Generator().manual_seed(seed)
        )
        assert torch.equal(masked[~candidates], ids[~candidates])
        assert bool((labels[~candidates] == IGNORE_INDEX).all())
    with pytest.raises(ValueError, match="probability"):
        mask_tokens(ids, mask, VOCAB, MASK, SPECIAL, probability=1.5)


def test_loss_ignores_unchosen_tokens():
    logits = torch.randn(1, 3, 5)
    labels = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX]])
    expected = torch.nn.functional.cross_entropy(logits[0, 1:2], labels[0, 1:2])
    torch.testing.assert_close(mlm_loss(logits, labels), expected)
    none = mlm_loss(logits.requires_grad_(), torch.full((1, 3), IGNORE_INDEX))
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_loss_drops_when_overfitting_one_caption():
    torch.manual_seed(0)
    model = build_model(deterministic_tiny_random())
    ensure_v2_heads(model, mlm=True)
    batch = collate([SquaresDataset(1, size=96)[0]])  # "red square. blue circle"
    generator = torch.Generator().manual_seed(0)
    masked, labels = mask_tokens(
        batch.input_ids, batch.attention_mask, VOCAB, MASK, SPECIAL, probability=0.5, generator=generator
    )
    assert int((labels != IGNORE_INDEX).sum()) >= 1
    optimizer = torch.optim.Adam(
        [p for n, p in model.named_parameters() if not n.startswith("backbone.")], lr=1e-2
    )
    losses = []
    for _ in range(30):
        output = model(batch.images, masked, batch.attention_mask, v2=("mlm",))
        loss = mlm_loss(output.v2["mlm_logits"], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[0] > 5.0  # ~log(30522) at random
    assert losses[-1] < 0.2 * losses[0]
