"""L_inter: category-propagation targets, the loss against a naive loop, gradients to pre-fusion features,
and the DDP-gathered loss against one process on the concatenated batch (2 gloo processes)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from glip.data.toy import SquaresDataset, deterministic_tiny_random
from glip.data.types import collate
from glip.losses.contrastive import (
    InterInputs,
    contrastive_loss,
    gather_inter_inputs,
    inter_image_loss,
    inter_targets,
)
from glip.losses.grounding import output_losses
from glip.models.glip import build_model
from glip.models.pretrain_heads import ensure_v2_heads
from glip.text.phrases import NO_PHRASE, phrase_id

RED, BLUE, GREEN = phrase_id("red circle"), phrase_id("blue square"), phrase_id("green star")


def test_targets_own_tokens_and_category_propagation():
    # image 0: caption "[CLS] red circle . blue square [SEP]" (positions 0..6); boxes: red circle, blue square
    # image 1: caption "[CLS] green star . red circle [SEP]"; box: green star (no red circle in image 1)
    region_image = torch.tensor([0, 0, 0, 1])
    region_phrase = torch.tensor([RED, RED, BLUE, GREEN])
    region_tokens = torch.zeros(4, 7, dtype=torch.bool)
    region_tokens[0:2, 1:3] = True  # red circle tokens of image 0
    region_tokens[2, 4:6] = True  # blue square
    region_tokens[3, 1:3] = True  # green star in image 1
    word_image = torch.tensor([0] * 7 + [1] * 7)
    word_position = torch.tensor(list(range(7)) * 2)
    n = NO_PHRASE
    word_phrase = torch.tensor([n, RED, RED, n, BLUE, BLUE, n] + [n, GREEN, GREEN, n, RED, RED, n])
    targets = inter_targets(
        region_image, region_phrase, region_tokens, word_image, word_position, word_phrase
    )
    expected = torch.zeros(4, 14, dtype=torch.bool)
    # own tokens + the "red circle" of image 1's caption (a phrase without a box there)
    expected[0:2, [1, 2, 11, 12]] = True
    expected[2, [4, 5]] = True  # blue square: only in image 0
    expected[3, [8, 9]] = True  # green star: own tokens only
    assert torch.equal(targets, expected)


def test_targets_without_phrase_ids_fall_back_to_own_tokens():
    region_tokens = torch.tensor([[False, True, True]])
    targets = inter_targets(
        torch.tensor([0]),
        torch.tensor([NO_PHRASE]),
        region_tokens,
        torch.tensor([0, 0, 0, 1, 1, 1]),
        torch.tensor([0, 1, 2, 0, 1, 2]),
        torch.full((6,), NO_PHRASE),
    )
    # the unknown ids (-1) must not match each other across images
    assert targets.tolist() == [[False, True, True, False, False, False]]


def _naive_loss(regions, words, targets, scale):
    n, m = targets.shape
    sims = [[0.0] * m for _ in range(n)]
    for i in range(n):
        ri = regions[i] / regions[i].norm()
        for j in range(m):
            wj = words[j] / words[j].norm()
            sims[i][j] = float(ri @ wj) * scale
    columns = [[sims[i][j] for i in range(n)] for j in range(m)]
    region_to_word = _naive_side(sims, [[bool(targets[i, j]) for j in range(m)] for i in range(n)])
    word_to_region = _naive_side(columns, [[bool(targets[i, j]) for i in range(n)] for j in range(m)])
    return (region_to_word + word_to_region) / 2


def _naive_side(rows, positives):
    """Mean over the rows with a positive of logsumexp(row) - mean(row's positives)."""
    total, count = 0.0, 0
    for row, positive in zip(rows, positives):
        pos = [value for value, is_positive in zip(row, positive) if is_positive]
        if pos:
            total += math.log(sum(math.exp(value) for value in row)) - sum(pos) / len(pos)
            count += 1
    return total / count


def test_loss_equals_naive_per_pair_computation():
    generator = torch.Generator().manual_seed(0)
    regions = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    words = torch.randn(9, 5, generator=generator, dtype=torch.float64)
    targets = torch.rand(7, 9, generator=generator) < 0.25
    targets[3] = False  # a region without positives
    targets[:, 4] = False  # a word without positives
    targets[0, 0] = True
    loss = contrastive_loss(regions, words, targets, 1 / 0.07)
    assert float(loss) == pytest.approx(_naive_loss(regions, words, targets, 1 / 0.07), rel=1e-10)


def test_loss_without_positives_is_connected_zero():
    regions = torch.randn(3, 4, requires_grad=True)
    words = torch.randn(5, 4, requires_grad=True)
    loss = contrastive_loss(regions, words, torch.zeros(3, 5, dtype=torch.bool), 10.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and regions.grad is not None and float(regions.grad.abs().sum()) == 0.0


def test_gradients_reach_pre_fusion_features_only():
    torch.manual_seed(0)
    model = build_model(deterministic_tiny_random())
    ensure_v2_heads(model, inter=True)
    dataset = SquaresDataset(2, size=128)
    batch = collate([dataset[0], dataset[1]])
    output = model(batch.images, batch.input_ids, batch.attention_mask, v2=("inter",))
    for feature in (*output.fpn, output.text.hidden):
        feature.retain_grad()
    _, assignments = output_losses(output, batch.targets)
    matched = [a.matched_gt for a in assignments]
    assert all(int((m >= 0).sum()) > 0 for m in matched)
    loss = inter_image_loss(output, batch.targets, matched)
    loss.backward()
    assert loss.item() > 0
    assert float(output.text.hidden.grad.abs().sum()) > 0
    assert sum(float(f.grad.abs().sum()) for f in output.fpn) > 0
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert float(grads["backbone.patch_embed.proj.weight"].abs().sum()) > 0  # through the FPN features
    assert float(grads["text_encoder.bert.embeddings.word_embeddings.weight"].abs().sum()) > 0
    assert float(grads["v2_heads.inter.log_scale"].abs()) > 0  # learnable temperature
    # features are taken before fusion: nothing of the fusion tower / predictors is involved
    assert all(g is None for n, g in grads.items() if n.startswith("head."))


def test_only_positive_anchors_are_regions():
    torch.manual_seed(0)
    model = build_model(deterministic_tiny_random())
    ensure_v2_heads(model, inter=True)
    batch = collate([SquaresDataset(1, size=128)[0]])
    output = model(batch.images, batch.input_ids, batch.attention_mask, v2=("inter",))
    regions = output.v2["inter_regions"]
    assert regions.shape[1] == sum(a.shape[0] for a in output.anchors)
    # anchor order of the projection = the FPN flattening used by the head (level, then row-major)
    level0 = output.fpn[0][0].flatten(1).t()  # (H0 * W0, C)
    head = model.v2_heads["inter"]
    torch.testing.assert_close(regions[0, : level0.shape[0]], head.region_proj(level0))


# ---------------------------------------------------------------------- DDP: 2 gloo processes
def _rank_inputs(rank: int, layer: torch.nn.Linear) -> InterInputs:
    """A hand-made half-batch per rank, of different sizes (regions 3 / 5, words 6 / 4, text 6 / 4)."""
    generator = torch.Generator().manual_seed(100 + rank)
    num_regions, length = (3, 6) if rank == 0 else (5, 4)
    raw_regions = torch.randn(num_regions, 4, generator=generator)
    raw_words = torch.randn(length, 4, generator=generator)
    tokens = torch.zeros(num_regions, length, dtype=torch.bool)
    tokens[:, 1:3] = True
    ids = [RED, BLUE, RED, GREEN, BLUE][:num_regions]
    word_phrase = torch.full((length,), NO_PHRASE)
    word_phrase[1:3] = RED if rank == 0 else BLUE
    return InterInputs(
        regions=layer(raw_regions),
        region_image=torch.zeros(num_regions, dtype=torch.int64),
        region_phrase=torch.tensor(ids),
        region_tokens=tokens,
        words=layer(raw_words),
        word_image=torch.zeros(length, dtype=torch.int64),
        word_position=torch.arange(length),
        word_phrase=word_phrase,
        num_images=1,
    )


def _layer() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        layer = _layer()
        gathered = gather_inter_inputs(_rank_inputs(rank, layer))
        loss = contrastive_loss(gathered.regions, gathered.words, gathered.targets(), 5.0)
        loss.backward()
        for p in layer.parameters():  # what DDP does with the gradients
            dist.all_reduce(p.grad)
            p.grad /= 2
        torch.save(
            {
                "loss": loss.detach(),
                "grads": [p.grad for p in layer.parameters()],
                "images": gathered.region_image,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def _concatenated(layer: torch.nn.Linear) -> InterInputs:
    parts = [_rank_inputs(0, layer), _rank_inputs(1, layer)]
    length = max(p.region_tokens.shape[1] for p in parts)
    pad = [torch.nn.functional.pad(p.region_tokens, (0, length - p.region_tokens.shape[1])) for p in parts]
    return InterInputs(
        regions=torch.cat([p.regions for p in parts]),
        region_image=torch.cat([p.region_image + i for i, p in enumerate(parts)]),
        region_phrase=torch.cat([p.region_phrase for p in parts]),
        region_tokens=torch.cat(pad),
        words=torch.cat([p.words for p in parts]),
        word_image=torch.cat([p.word_image + i for i, p in enumerate(parts)]),
        word_position=torch.cat([p.word_position for p in parts]),
        word_phrase=torch.cat([p.word_phrase for p in parts]),
        num_images=2,
    )


def test_ddp_gathered_loss_equals_single_process():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(str(Path(tmp) / "init"), tmp), nprocs=2, join=True)
        results = [torch.load(Path(tmp) / f"rank{r}.pt") for r in range(2)]
    layer = _layer()
    single = _concatenated(layer)
    targets = single.targets()
    assert bool(targets[:3, 6:].any())  # category propagation across the two processes' images
    loss = contrastive_loss(single.regions, single.words, targets, 5.0)
    loss.backward()
    for result in results:
        assert torch.equal(result["images"], torch.tensor([0, 0, 0, 1, 1, 1, 1, 1]))
        torch.testing.assert_close(result["loss"], loss.detach(), rtol=1e-6, atol=1e-7)
        for got, want in zip(result["grads"], [p.grad for p in layer.parameters()]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
