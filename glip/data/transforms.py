"""Joint image + target transforms (official ``build_transforms(cfg, is_train)``).

Train: Resize(random choice of ``min_sizes``, ``max_size``) -> RandomHorizontalFlip(``flip_prob``) ->
ToTensor -> BGR x255 normalise. Eval: the same with one ``min_size`` and no flip. The resize rule and PIL
bilinear resampling are those of inference (:mod:`glip.preprocess`); boxes follow ``BoxList.resize`` /
``BoxList.transpose`` (legacy "+1" flip).

A transform is called as ``transform(record, rng=None)`` with a :class:`~glip.data.types.GroundingRecord`
holding a PIL image and returns one holding the normalised (3, H, W) tensor. The datasets pass a per-sample
``numpy`` generator (seeded by dataset seed, epoch and index), so the augmentation of every sample is
reproducible also with several DataLoader workers; without ``rng`` the transform uses its own generator
(``seed``).

Flip and text: unlike official GLIP (which flips the image only), :class:`TrainTransform` swaps the words
"left" and "right" in the caption of a flipped sample and remaps every char span (``swap_left_right=False``
restores the official behaviour).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from glip.config import InputConfig
from glip.data.boxes import clip_to_frame, flip_boxes_legacy, resize_boxes
from glip.data.captions import swap_left_right
from glip.data.masks import flip_masks, resize_masks
from glip.data.types import DataError, GroundingRecord
from glip.preprocess import normalize, resize_image

__all__ = ["EvalTransform", "TrainTransform", "apply_transform"]

_DEFAULT = InputConfig()


def apply_transform(
    record: GroundingRecord,
    min_size: int,
    max_size: int,
    flip: bool,
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    to_bgr255: bool = True,
    swap_words: bool = True,
) -> GroundingRecord:
    """Resize (official rule, PIL bilinear) -> optional horizontal flip -> normalise, boxes and caption
    alongside; boxes are then clamped to the image and boxes without extent are dropped with their spans.
    Instance masks (``record.masks``), when present, are resized and flipped with the image."""
    image = record.image
    if not isinstance(image, Image.Image):
        raise DataError(f"{record.image_id}: the transform expects a PIL image, got {type(image).__name__}")
    image = image.convert("RGB") if image.mode != "RGB" else image
    old_hw = (image.height, image.width)
    image = resize_image(image, min_size, max_size)
    new_hw = (image.height, image.width)
    boxes = resize_boxes(record.boxes.to(torch.float32).reshape(-1, 4), old_hw, new_hw)
    masks = None if record.masks is None else resize_masks(record.masks, new_hw)
    caption, tokens_positive = record.caption, record.tokens_positive
    extra = dict(record.extra)
    if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
        boxes = flip_boxes_legacy(boxes, new_hw[1])
        masks = None if masks is None else flip_masks(masks)
        if swap_words:
            caption, tokens_positive = swap_left_right(caption, tokens_positive)
            if record.extra.get("phrase_spans"):  # GLIPv2 prompt phrases move with the edit too
                extra = {**extra, "phrase_spans": swap_left_right(record.caption, extra["phrase_spans"])[1]}
    tensor = normalize(image, pixel_mean, pixel_std, to_bgr255)
    boxes, keep = clip_to_frame(boxes, new_hw[1], new_hw[0])
    out = GroundingRecord(
        image=tensor,
        boxes=boxes,
        labels=record.labels,
        tokens_positive=[list(spans) for spans in tokens_positive],
        caption=caption,
        image_id=record.image_id,
        extra={**extra, "flipped": flip, "original_hw": old_hw},
        masks=masks,
    )
    return out if bool(keep.all()) else out.select(keep)


class EvalTransform:
    """Deterministic: resize to ``min_size`` (longer side <= ``max_size``), normalise. No flip."""

    def __init__(
        self,
        min_size: int = _DEFAULT.min_size,
        max_size: int = _DEFAULT.max_size,
        pixel_mean: Sequence[float] = _DEFAULT.pixel_mean,
        pixel_std: Sequence[float] = _DEFAULT.pixel_std,
        to_bgr255: bool = _DEFAULT.to_bgr255,
    ) -> None:
        self.min_size = int(min_size)
        self.max_size = int(max_size)
        self.pixel_mean = tuple(pixel_mean)
        self.pixel_std = tuple(pixel_std)
        self.to_bgr255 = to_bgr255

    @classmethod
    def from_config(cls, config: InputConfig) -> EvalTransform:
        """Test-time sizes and normalisation of a model's :class:`~glip.config.InputConfig`."""
        return cls(config.min_size, config.max_size, config.pixel_mean, config.pixel_std, config.to_bgr255)

    def __call__(self, record: GroundingRecord, rng: np.random.Generator | None = None) -> GroundingRecord:
        return apply_transform(
            record, self.min_size, self.max_size, False, self.pixel_mean, self.pixel_std, self.to_bgr255
        )

    def __repr__(self) -> str:
        return f"EvalTransform(min_size={self.min_size}, max_size={self.max_size})"


class TrainTransform:
    """Random shorter side from ``min_sizes`` (official ``MULT_MIN_SIZE_TRAIN``), longer side <= ``max_size``,
    horizontal flip with probability ``flip_prob`` (legacy ``x1' = W - x2 - 1``; "left" <-> "right" swapped in
    the caption when ``swap_left_right``), normalisation as at inference."""

    def __init__(
        self,
        min_sizes: Sequence[int] | int = _DEFAULT.train_min_sizes,
        max_size: int = _DEFAULT.train_max_size,
        flip_prob: float = 0.5,
        pixel_mean: Sequence[float] = _DEFAULT.pixel_mean,
        pixel_std: Sequence[float] = _DEFAULT.pixel_std,
        to_bgr255: bool = _DEFAULT.to_bgr255,
        seed: int | None = None,
        swap_left_right: bool = True,
    ) -> None:
        sizes = (min_sizes,) if isinstance(min_sizes, int) else tuple(int(s) for s in min_sizes)
        if not sizes or min(sizes) <= 0:
            raise ValueError(f"min_sizes must be positive sizes, got {min_sizes!r}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.min_sizes = sizes
        self.max_size = int(max_size)
        self.flip_prob = float(flip_prob)
        self.pixel_mean = tuple(pixel_mean)
        self.pixel_std = tuple(pixel_std)
        self.to_bgr255 = to_bgr255
        self.swap_left_right = swap_left_right
        self._rng = np.random.default_rng(seed)

    @classmethod
    def from_config(
        cls, config: InputConfig, flip_prob: float = 0.5, seed: int | None = None
    ) -> TrainTransform:
        """Training sizes (``train_min_sizes``, ``train_max_size``) and normalisation of a model's config."""
        return cls(
            config.train_min_sizes,
            config.train_max_size,
            flip_prob,
            config.pixel_mean,
            config.pixel_std,
            config.to_bgr255,
            seed=seed,
        )

    def __call__(self, record: GroundingRecord, rng: np.random.Generator | None = None) -> GroundingRecord:
        rng = rng if rng is not None else self._rng
        min_size = self.min_sizes[int(rng.integers(len(self.min_sizes)))]
        flip = bool(rng.random() < self.flip_prob)
        return apply_transform(
            record,
            min_size,
            self.max_size,
            flip,
            self.pixel_mean,
            self.pixel_std,
            self.to_bgr255,
            swap_words=self.swap_left_right,
        )

    def __repr__(self) -> str:
        return (
            f"TrainTransform(min_sizes={self.min_sizes}, max_size={self.max_size}, flip_prob={self.flip_prob}, "
            f"swap_left_right={self.swap_left_right})"
        )
