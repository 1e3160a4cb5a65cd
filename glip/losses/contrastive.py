"""GLIPv2 inter-image region-word contrastive loss L_inter, with category propagation and DDP gathering.

GLIPv2 (paper section 3.2) contrasts every region of a batch against the words of *every* caption of the batch,
on features taken **before** the fusion tower, so that the phrases of other images become negatives:

    regions: the FPN features (P3..P7, before fusion) at the ATSS-positive anchors of every image
             --region_proj--> (N, d), L2-normalised
    words:   the text encoder's output (before fusion) at the real tokens of every caption
             --word_proj--> (M, d), L2-normalised
    S = regions . words^T * s                         (N, M), s = 1 / temperature (learnable or fixed)

The target matrix ``Y`` (N, M) is 1 where

* the word is in the same image and belongs to the region's own phrase (the ``token_map`` row of the anchor's
  ground-truth box: the diagonal blocks, GLIP's own targets), or
* **category propagation**: the word belongs to a phrase with the same identity as the region's phrase
  (normalised text, :mod:`glip.text.phrases`), in *any* caption of the batch (the off-diagonal blocks).

The loss is a two-way multi-positive cross-entropy (the form of MDETR's contrastive alignment loss, here
over the whole batch):

    L_r2w = mean over regions i with a positive of [ logsumexp_j S_ij - mean_{j: Y_ij} S_ij ]
    L_w2r = mean over words j with a positive of   [ logsumexp_i S_ij - mean_{i: Y_ij} S_ij ]
    L_inter = (L_r2w + L_w2r) / 2

Under DDP the regions, words and their metadata are gathered from every rank (:func:`gather_with_grad`:
variable sizes, gradients flow back to each rank's own features) and every rank computes the same loss on the
whole gathered batch; the gather's backward sums the gradient from every rank, so after DDP's gradient
averaging the parameter gradients equal those of one process holding the whole batch.

The projections and the temperature are the model's "inter" head
(:class:`glip.models.pretrain_heads.InterContrastiveHead`); :data:`INIT_TEMPERATURE` and
:data:`MAX_LOGIT_SCALE` are defined there and re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from glip.models.pretrain_heads import INIT_TEMPERATURE, MAX_LOGIT_SCALE
from glip.text.phrases import NO_PHRASE

__all__ = [
    "INIT_TEMPERATURE",
    "MAX_LOGIT_SCALE",
    "InterInputs",
    "contrastive_loss",
    "gather_inter_inputs",
    "gather_with_grad",
    "inter_image_loss",
    "inter_inputs_from_output",
    "inter_targets",
]


# ---------------------------------------------------------------------- the loss on flat features
def inter_targets(
    region_image: torch.Tensor,
    region_phrase: torch.Tensor,
    region_tokens: torch.Tensor,
    word_image: torch.Tensor,
    word_position: torch.Tensor,
    word_phrase: torch.Tensor,
) -> torch.Tensor:
    """The target matrix Y (N, M) bool.

    region_image: (N,) image index; region_phrase: (N,) phrase id of the region's box (``NO_PHRASE`` if
    unknown); region_tokens: (N, T) bool, the box's own tokens; word_image: (M,) image index; word_position:
    (M,) token position in its caption (< T); word_phrase: (M,) phrase id of the word (``NO_PHRASE`` if none).
    """
    own = (region_image[:, None] == word_image[None, :]) & region_tokens[:, word_position].bool()
    propagated = (region_phrase[:, None] == word_phrase[None, :]) & (region_phrase[:, None] != NO_PHRASE)
    return own | propagated


def contrastive_loss(
    regions: torch.Tensor, words: torch.Tensor, targets: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Two-way multi-positive cross-entropy. regions: (N, d); words: (M, d); targets: (N, M) bool -> scalar.

    Features are L2-normalised here. Rows / columns without a positive do not contribute (but their features
    are still negatives for the others). Without any positive the loss is a graph-connected zero.
    """
    # at least fp32 (autocast may give fp16 projections): logsumexp of scaled cosines
    regions = regions.to(torch.promote_types(regions.dtype, torch.float32))
    words = words.to(torch.promote_types(words.dtype, torch.float32))
    sim = F.normalize(regions, dim=-1) @ F.normalize(words, dim=-1).t() * logit_scale  # (N, M)
    positives = targets.to(sim.dtype)
    if not bool(targets.any()):
        return sim.sum() * 0.0  # still connected to both heads (DDP expects their gradients)

    def one_way(scores: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:  # rows contrast over columns
        count = pos.sum(dim=1)
        has = count > 0
        per_row = scores.logsumexp(dim=1) - (scores * pos).sum(dim=1) / count.clamp(min=1)
        return per_row[has].mean()

    return 0.5 * (one_way(sim, positives) + one_way(sim.t(), positives.t()))


# ---------------------------------------------------------------------- from a GLIP forward
@dataclass
class InterInputs:
    """Flat L_inter inputs of one process (or of all, after :func:`gather_inter_inputs`).

    regions: (N, d); words: (M, d); region_image / word_image: (N,) / (M,) image index (global after a gather);
    region_phrase / word_phrase: phrase ids; region_tokens: (N, T) bool own tokens; word_position: (M,).
    num_images: images covered.
    """

    regions: torch.Tensor
    region_image: torch.Tensor
    region_phrase: torch.Tensor
    region_tokens: torch.Tensor
    words: torch.Tensor
    word_image: torch.Tensor
    word_position: torch.Tensor
    word_phrase: torch.Tensor
    num_images: int

    def targets(self) -> torch.Tensor:
        return inter_targets(
            self.region_image,
            self.region_phrase,
            self.region_tokens,
            self.word_image,
            self.word_position,
            self.word_phrase,
        )


def inter_inputs_from_output(
    region_features: torch.Tensor,
    word_features: torch.Tensor,
    text_mask: torch.Tensor,
    targets: Sequence,
    matched_gt: Sequence[torch.Tensor],
) -> InterInputs:
    """Select the positive anchors and the real tokens of every image.

    region_features: (B, A, d) projected FPN features at every anchor; word_features: (B, T, d) projected
    text encoder output; text_mask: (B, T); targets: B :class:`glip.losses.grounding.Target` (``phrase_ids`` /
    ``token_phrase_ids`` used when present); matched_gt: B tensors (A,), the ATSS-matched box of each anchor
    (-1 = negative), e.g. ``[a.matched_gt for a in assignments]``.
    """
    batch, length = text_mask.shape
    device = region_features.device
    regions, region_image, region_phrase, region_tokens = [], [], [], []
    words, word_image, word_position, word_phrase = [], [], [], []
    positions = torch.arange(length, device=device)
    for b, target in enumerate(targets):
        anchors = torch.nonzero(matched_gt[b] >= 0).squeeze(1)
        gt = matched_gt[b][anchors]
        regions.append(region_features[b, anchors])
        region_image.append(torch.full_like(gt, b))
        ids = getattr(target, "phrase_ids", None)
        region_phrase.append(ids.to(device)[gt] if ids is not None else torch.full_like(gt, NO_PHRASE))
        region_tokens.append(target.token_map[gt, :length].to(device) > 0)
        real = text_mask[b] > 0
        words.append(word_features[b, real])
        word_image.append(torch.full((int(real.sum()),), b, dtype=torch.int64, device=device))
        word_position.append(positions[real])
        token_ids = getattr(target, "token_phrase_ids", None)
        word_phrase.append(
            token_ids.to(device)[:length][real]
            if token_ids is not None
            else torch.full((int(real.sum()),), NO_PHRASE, dtype=torch.int64, device=device)
        )
    return InterInputs(
        regions=torch.cat(regions),
        region_image=torch.cat(region_image).long(),
        region_phrase=torch.cat(region_phrase).long(),
        region_tokens=torch.cat(region_tokens).reshape(-1, length),
        words=torch.cat(words),
        word_image=torch.cat(word_image),
        word_position=torch.cat(word_position),
        word_phrase=torch.cat(word_phrase).long(),
        num_images=batch,
    )


# ---------------------------------------------------------------------- DDP gathering
def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_sizes(count: int, device: torch.device) -> list[int]:
    size = torch.tensor([count], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _gather_padded(tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """All-gather dim-0 chunks of different sizes (padded to the largest for the collective)."""
    longest = max(sizes)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    chunks = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(chunks, padded.contiguous())
    return torch.cat([chunk[:size] for chunk, size in zip(chunks, sizes)])


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        sizes = _gather_sizes(tensor.shape[0], tensor.device)
        rank = dist.get_rank()
        ctx.start, ctx.stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
        return _gather_padded(tensor, sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # every rank computed the loss on the gathered tensor: sum their gradients for this rank's rows
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.start : ctx.stop]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate dim-0 chunks (any sizes) from every rank, rank order; gradients reach each rank's chunk
    (summed over the ranks that used it). Identity without a process group."""
    if not _distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


def _gather_plain(tensor: torch.Tensor) -> torch.Tensor:
    """Like :func:`gather_with_grad` without gradients (ids, masks; bool travels as uint8 for gloo)."""
    if not _distributed():
        return tensor
    sizes = _gather_sizes(tensor.shape[0], tensor.device)
    if tensor.dtype == torch.bool:
        return _gather_padded(tensor.to(torch.uint8), sizes).bool()
    return _gather_padded(tensor, sizes)


def gather_inter_inputs(inputs: InterInputs) -> InterInputs:
    """Gather every rank's regions, words and metadata; image indices become global (rank-major)."""
    if not _distributed():
        return inputs
    device = inputs.regions.device
    image_counts = _gather_sizes(inputs.num_images, device)
    offset = sum(image_counts[: dist.get_rank()])
    longest = torch.tensor([inputs.region_tokens.shape[1]], dtype=torch.int64, device=device)
    dist.all_reduce(longest, op=dist.ReduceOp.MAX)
    tokens = F.pad(inputs.region_tokens, (0, int(longest.item()) - inputs.region_tokens.shape[1]))
    return InterInputs(
        regions=gather_with_grad(inputs.regions),
        region_image=_gather_plain(inputs.region_image + offset),
        region_phrase=_gather_plain(inputs.region_phrase),
        region_tokens=_gather_plain(tokens),
        words=gather_with_grad(inputs.words),
        word_image=_gather_plain(inputs.word_image + offset),
        word_position=_gather_plain(inputs.word_position),
        word_phrase=_gather_plain(inputs.word_phrase),
        num_images=sum(image_counts),
    )


def inter_image_loss(
    output,  # noqa: ANN001 - glip.models.glip.GLIPOutput
    targets: Sequence,
    matched_gt: Sequence[torch.Tensor],
    temperature: float | None = None,
    gather: bool = True,
) -> torch.Tensor:
    """L_inter of a GLIP forward run with ``v2=("inter",)``.

    targets: the batch's :class:`glip.losses.grounding.Target`; matched_gt: per image (A,) ATSS-matched box
    index (-1 = negative). ``temperature``: a fixed temperature, or None for the head's learnable one.
    ``gather``: contrast against the whole DDP batch (every rank must call this).
    """
    if output.v2 is None or "inter_regions" not in output.v2:
        raise ValueError('L_inter needs the "inter" head outputs: run the model with v2=("inter",)')
    inputs = inter_inputs_from_output(
        output.v2["inter_regions"], output.v2["inter_words"], output.text.mask, targets, matched_gt
    )
    if gather:
        inputs = gather_inter_inputs(inputs)
    if temperature is not None:
        if temperature <= 0:
            raise ValueError(f"inter_temperature must be > 0, got {temperature}")
        scale: torch.Tensor | float = 1.0 / temperature
    else:
        scale = output.v2["inter_logit_scale"]
    return contrastive_loss(inputs.regions, inputs.words, inputs.targets(), scale)
