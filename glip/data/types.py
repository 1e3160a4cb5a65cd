"""What the training data looks like: one :class:`Sample` per image, :func:`collate` into a :class:`Batch`.

A dataset reads a record, builds a :class:`GroundingRecord` (PIL image + boxes + caption + char spans in the
original image frame), a transform resizes / flips / normalises it jointly, and :func:`make_sample` turns the
caption's char spans into the binary token map the loss needs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from glip.losses.grounding import Target
from glip.preprocess import ImageBatch, pad_batch
from glip.text.phrases import phrase_ids_for_spans, token_phrase_ids
from glip.text.prompts import Span, create_positive_map, encoding_offsets
from glip.text.tokenizer import MAX_QUERY_LEN, PromptError, get_tokenizer, tokenize_captions

logger = logging.getLogger(__name__)

__all__ = ["Batch", "DataError", "GroundingRecord", "Sample", "collate", "make_sample"]


class DataError(ValueError):
    """A training record that cannot be used (missing / unreadable image, malformed annotation, caption too
    long, ...). The message names the file and the record (index / image id)."""


@dataclass
class Sample:
    """One training example, ready for the model.

    image:    (3, H, W) float32, resized + normalised (BGR x255, mean/std) as at inference.
    target:   boxes (G, 4) xyxy in the resized frame (legacy "+1" convention: x2 = x1 + w - 1),
              labels (G,) int64 >= 1, token_map (G, 256) float {0, 1}.
    caption:  the text the token map refers to.
    image_id: file name or id, for messages.
    """

    image: torch.Tensor
    target: Target
    caption: str
    image_id: str


@dataclass
class Batch:
    """A collated batch.

    images:         padded to /32, unpadded sizes in ``images.image_sizes``.
    input_ids:      (B, L) int64, L = longest caption in tokens (<= 256), [CLS] ... [SEP] [PAD]*.
    attention_mask: (B, L) int64.
    targets:        B :class:`Target`; ``token_map`` columns index the same token positions as ``input_ids``.
    """

    images: ImageBatch
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: list[Target]
    captions: list[str]
    image_ids: list[str]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            images=self.images.to(device),
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            targets=[t.to(device) for t in self.targets],
            captions=self.captions,
            image_ids=self.image_ids,
        )


def collate(samples: list[Sample], size_divisibility: int = 32) -> Batch:
    """Pad the images to a multiple of ``size_divisibility`` (zeros, bottom/right, as official
    ``to_image_list``) and tokenize the captions to the longest one (never truncated: a caption over 256
    tokens raises :class:`glip.text.tokenizer.PromptError`; the datasets refuse such captions earlier)."""
    if not samples:
        raise DataError("collate got an empty list of samples")
    images = pad_batch([s.image for s in samples], size_divisibility)
    captions = [s.caption for s in samples]
    tokens = tokenize_captions(captions, max_length=MAX_QUERY_LEN, pad_to_max=False, truncation=False)
    return Batch(
        images=images,
        input_ids=tokens.input_ids,
        attention_mask=tokens.attention_mask,
        targets=[s.target for s in samples],
        captions=captions,
        image_ids=[s.image_id for s in samples],
    )


@dataclass
class GroundingRecord:
    """An image with its grounding annotation, before or after a transform.

    image:           PIL RGB image (before the transform) or (3, H, W) normalised tensor (after).
    boxes:           (G, 4) float32 xyxy, legacy "+1" convention, in the frame of ``image``.
    labels:          (G,) int64 >= 1.
    tokens_positive: G lists of (beg, end) char spans into ``caption`` (end exclusive).
    caption:         the text.
    image_id:        for messages.
    masks:           optional (G, H, W) bool instance masks in the frame of ``image`` (segmentation data).
    """

    image: Image.Image | torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    tokens_positive: list[list[Span]]
    caption: str
    image_id: str
    extra: dict = field(default_factory=dict)
    masks: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.boxes) != len(self.labels) or len(self.boxes) != len(self.tokens_positive):
            raise DataError(
                f"{self.image_id}: {len(self.boxes)} boxes, {len(self.labels)} labels and "
                f"{len(self.tokens_positive)} span lists must match"
            )
        if self.masks is not None and (self.masks.ndim != 3 or len(self.masks) != len(self.boxes)):
            raise DataError(
                f"{self.image_id}: masks of shape {tuple(self.masks.shape)} do not fit {len(self.boxes)} boxes "
                "(expected (G, H, W))"
            )

    @property
    def size_hw(self) -> tuple[int, int]:
        """(H, W) of ``image``."""
        if isinstance(self.image, torch.Tensor):
            return int(self.image.shape[-2]), int(self.image.shape[-1])
        return self.image.height, self.image.width

    def select(self, keep: torch.Tensor | Sequence[bool]) -> GroundingRecord:
        """A copy with only the boxes where ``keep`` is True (their labels and spans too)."""
        keep = torch.as_tensor(keep, dtype=torch.bool).reshape(-1)
        indices = torch.nonzero(keep).reshape(-1).tolist()
        return GroundingRecord(
            image=self.image,
            boxes=self.boxes[keep].reshape(-1, 4),
            labels=self.labels[keep].reshape(-1),
            tokens_positive=[self.tokens_positive[i] for i in indices],
            caption=self.caption,
            image_id=self.image_id,
            extra=self.extra,
            masks=None if self.masks is None else self.masks[keep],
        )


def make_sample(record: GroundingRecord, max_len: int = MAX_QUERY_LEN) -> Sample:
    """A transformed record -> :class:`Sample`: tokenizes the caption and builds the binary token map.

    The token map is ``create_positive_map(..., binary=True)`` (official retry rules for span edges), i.e.
    what the official collate makes of the normalised map (``.bool().float()``). A box whose spans get no
    token at all (e.g. a span over punctuation only) is dropped with a warning: official GLIP would keep it
    as a positive box with an all-zero token target.

    Raises:
        DataError: the caption is empty / has no letter or digit, or is longer than ``max_len`` tokens
            (captions are never truncated silently), or a span lies outside the caption.
    """
    if not isinstance(record.image, torch.Tensor):
        raise DataError(
            f"{record.image_id}: make_sample needs the transformed (tensor) image; apply a transform"
        )
    caption = record.caption
    if not isinstance(caption, str) or not any(ch.isalnum() for ch in caption):
        raise DataError(f"{record.image_id}: caption {caption!r} is empty or has no letter or digit")
    encoding = get_tokenizer()(caption, truncation=False)
    num_tokens = len(encoding["input_ids"])
    if num_tokens > max_len:
        raise DataError(
            f"{record.image_id}: caption has {num_tokens} tokens (incl. [CLS]/[SEP]) > {max_len}; it is refused, "
            "not truncated"
        )
    boxes, labels = record.boxes.to(torch.float32).reshape(-1, 4), record.labels.to(torch.int64).reshape(-1)
    masks = record.masks
    try:
        token_map = create_positive_map(
            encoding_offsets(encoding), record.tokens_positive, max_len, binary=True, caption=caption
        )
        phrase_ids, token_phrase_ids = _phrase_identities(record, encoding, token_map, max_len)
    except PromptError as exc:
        raise DataError(f"{record.image_id}: {exc}") from None
    has_tokens = token_map.sum(dim=1) > 0
    if not bool(has_tokens.all()):
        lost = [
            caption[s[0][0] : s[0][1]] if s else ""
            for s, k in zip(record.tokens_positive, has_tokens)
            if not k
        ]
        logger.warning(
            "%s: dropped %d box(es) whose phrase has no token: %s", record.image_id, len(lost), lost
        )
        boxes, labels, token_map = boxes[has_tokens], labels[has_tokens], token_map[has_tokens]
        phrase_ids = phrase_ids[has_tokens]
        if masks is not None:
            masks = masks[has_tokens]
    if len(labels) and int(labels.min()) < 1:
        raise DataError(f"{record.image_id}: labels must be >= 1, got {labels.tolist()}")
    return Sample(
        image=record.image,
        target=Target(
            boxes=boxes,
            labels=labels,
            token_map=token_map,
            masks=masks,
            phrase_ids=phrase_ids,
            token_phrase_ids=token_phrase_ids,
        ),
        caption=caption,
        image_id=record.image_id,
    )


def _phrase_identities(
    record: GroundingRecord, encoding: object, token_map: torch.Tensor, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """GLIPv2 category propagation (glip/text/phrases.py): (G,) phrase id of each box and (max_len,) phrase id
    of every token. ``record.extra["phrase_spans"]`` (detection prompts: every class name, with or without
    a box) adds the phrases that have no box."""
    phrase_ids = phrase_ids_for_spans(record.caption, record.tokens_positive)
    maps, ids = [], []
    prompt_spans = record.extra.get("phrase_spans")
    if prompt_spans:
        offsets = encoding_offsets(encoding)  # type: ignore[arg-type]
        maps.append(create_positive_map(offsets, prompt_spans, max_len, binary=True, caption=record.caption))
        ids.append(phrase_ids_for_spans(record.caption, prompt_spans))
    maps.append(token_map.reshape(-1, max_len))
    ids.append(phrase_ids)
    return phrase_ids, token_phrase_ids(maps, ids)
