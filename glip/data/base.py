"""The base of the training datasets: error policy, per-sample randomness, image reading and clipping.

The formats (:mod:`glip.data.coco`, :mod:`glip.data.mdetr`, :mod:`glip.data.odvg`,
:mod:`glip.data.caption_only`) subclass :class:`GroundingDataset`. Every dataset returns
:class:`~glip.data.types.Sample` and shares the same policies:

* Annotations are parsed and validated when the dataset is built (malformed boxes, unknown categories, spans
  outside the caption, captions over ``max_len`` tokens, malformed JSON lines), so problems show up before
  training starts. Images are read in ``__getitem__`` (missing / unreadable files, size different from the
  annotation).
* ``on_error="skip"``: a bad record is left out (a warning names the file and the record, ``dataset.skipped``
  counts it, ``dataset.problems`` keeps the messages); in ``__getitem__`` the next usable sample is returned
  instead, so an epoch never crashes. ``on_error="raise"``: :class:`~glip.data.types.DataError`.
* Boxes use the official legacy convention (see :mod:`glip.data.boxes`) and are clipped to the image; boxes
  without extent are dropped silently (official ``clip_to_image(remove_empty=True)``), crowd boxes
  (``iscrowd=1``) are ignored.
* Suspicious but usable input is corrected and said once per file with a count (``dataset.corrections``):
  boxes partly outside their image (clipped), boxes entirely outside it (dropped; a COCO / MDETR image left
  without a box is left out), an image whose file is not the size its annotation declares (the file's size
  is used). Duplicate image ids are bad records (both images skipped: whose boxes are whose is unknown).
* Randomness (class sampling / shuffling, transform) comes from a generator seeded with
  ``(seed, epoch, index)``: call ``set_epoch(e)`` every epoch.
* Images are read without applying the EXIF orientation, like the official loader (annotations refer to the
  stored pixel grid); ``exif_transpose=True`` applies it (the default for
  :class:`~glip.data.caption_only.CaptionDataset`, whose images are fed to the predictor, which applies it too).
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from glip.data.boxes import clip_legacy, count_outside
from glip.data.masks import decode_segmentation, stack_masks
from glip.data.reading import read_image
from glip.data.transforms import EvalTransform
from glip.data.types import DataError, GroundingRecord, Sample, make_sample
from glip.images import ImageError
from glip.text.prompts import Span
from glip.text.tokenizer import MAX_QUERY_LEN

logger = logging.getLogger(__name__)

__all__ = ["Entry", "GroundingDataset", "OnError"]

OnError = Literal["skip", "raise"]
#: problems kept in ``dataset.problems`` (the count in ``dataset.skipped`` is exact)
_MAX_PROBLEMS = 1000


@dataclass
class Entry:
    """One usable record, validated. boxes: (N, 4) legacy xyxy, not yet clipped (the image size is checked
    when the image is read)."""

    file: str
    image_id: str
    boxes: torch.Tensor
    labels: torch.Tensor
    width: int | None = None
    height: int | None = None
    caption: str | None = None  # grounding / caption records; None for detection records
    tokens_positive: list[list[Span]] = field(default_factory=list)
    where: str = ""
    segmentations: list[Any] | None = None  # COCO segmentation per box (all boxes have one), else None


class GroundingDataset(Dataset):
    """Shared machinery: error policy, per-sample RNG, image reading, transform, :func:`make_sample`.

    Subclasses fill ``self.entries`` (list of validated records) and implement :meth:`_build_record`.
    """

    source: str = ""

    def __init__(
        self,
        image_dir: str | Path | None,
        transform: Any = None,
        on_error: OnError = "skip",
        max_len: int = MAX_QUERY_LEN,
        seed: int = 0,
        exif_transpose: bool = False,
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f'on_error must be "skip" or "raise", got {on_error!r}')
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.transform = transform if transform is not None else EvalTransform()
        self.on_error = on_error
        self.max_len = int(max_len)
        self.seed = int(seed)
        self.exif_transpose = exif_transpose
        self.epoch = 0
        self.skipped = 0
        self.problems: list[str] = []
        self.entries: list[Entry] = []
        self._bad: set[int] = set()
        #: corrected records by kind (boxes_clipped, boxes_outside, images_without_boxes, size_mismatch, ...)
        self.corrections: dict[str, int] = {}
        self._corrected_at_load: dict[str, set[int]] = {}
        self._reported: dict[str, int] = {}

    # ------------------------------------------------------------------ policy
    def _problem(self, message: str) -> None:
        """A bad record: raise (``on_error="raise"``) or warn + count."""
        if self.on_error == "raise":
            raise DataError(message)
        self.skipped += 1
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(message)
        logger.warning("skipped: %s", message)

    def set_epoch(self, epoch: int) -> None:
        """Re-seed the per-sample randomness (class sampling, augmentation) for ``epoch``."""
        self.epoch = int(epoch)
        new = {k: v for k, v in self.corrections.items() if v != self._reported.get(k)}
        if new:  # corrections found while reading images (sizes known only then): their counts so far
            logger.info("%s: corrected so far: %s", self.source, _describe(self.corrections))
            self._reported = dict(self.corrections)

    # ------------------------------------------------------------------ corrections
    def _screen_boxes(self, drop_empty: bool) -> None:
        """Count the boxes outside the declared image sizes (they are clipped / dropped when the image is
        read); with ``drop_empty`` leave out the images whose every box lies outside (like an image without
        annotations). Call at the end of ``__init__``, then :meth:`_report_corrections`."""
        kept = []
        for entry in self.entries:
            if entry.width is None or entry.height is None or not len(entry.boxes):
                kept.append(entry)
                continue
            outside, partly = count_outside(entry.boxes, entry.width, entry.height)
            self._count("boxes_outside", outside)
            self._count("boxes_clipped", partly)
            if drop_empty and outside and not clip_legacy(entry.boxes, entry.width, entry.height)[1].any():
                self._count("images_without_boxes", 1)
                continue
            kept.append(entry)
        self.entries = kept

    def _count(self, kind: str, count: int) -> None:
        if count:
            self.corrections[kind] = self.corrections.get(kind, 0) + count

    def _report_corrections(self) -> None:
        """One warning for the file: what was corrected, with counts."""
        if self.corrections:
            logger.warning("%s: %s", self.source, _describe(self.corrections))
            self._reported = dict(self.corrections)

    def _corrected_at_read(self, kind: str, key: int, message: str) -> None:
        """A correction found when a record's image is read (``key``: ``id(entry)``): counted once per
        record, the first of each kind said at once (the counts come with the next epoch)."""
        seen = self._corrected_at_load.setdefault(kind, set())
        if key in seen:
            return
        seen.add(key)
        self._count(kind, 1)
        if len(seen) == 1:
            logger.warning("%s (trained on the corrected value; further cases counted)", message)

    def _rngs(self, index: int) -> tuple[np.random.Generator, np.random.Generator]:
        prompt, transform = np.random.SeedSequence([self.seed, self.epoch, index]).spawn(2)
        return np.random.default_rng(prompt), np.random.default_rng(transform)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample:
        count = len(self.entries)
        index = operator.index(index)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of {count} samples")
        for attempt in range(count):
            i = (index + attempt) % count
            if i in self._bad:
                continue
            try:
                return self._load(i)
            except (DataError, ImageError) as exc:
                where = self.entries[i].where
                message = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
                if self.on_error == "raise":
                    raise DataError(message) from None
                self._bad.add(i)
                self._problem(message)
        raise DataError(f"{self.source}: no usable sample left ({self.skipped} skipped)")

    def _load(self, index: int) -> Sample:
        prompt_rng, transform_rng = self._rngs(index)
        record = self._build_record(index, prompt_rng)
        record = self.transform(record, rng=transform_rng)
        return make_sample(record, self.max_len)

    def _image_path(self, file: str) -> Path:
        path = Path(file)
        if path.is_absolute() or self.image_dir is None:
            return path
        return self.image_dir / path

    def _read(self, entry: Entry) -> Image.Image:
        path = self._image_path(entry.file)
        try:
            image = read_image(path, self.exif_transpose)
        except ImageError as exc:
            raise DataError(f"{entry.where}: {exc}") from None
        if entry.width is not None and entry.height is not None:
            if (image.width, image.height) != (entry.width, entry.height):
                self._corrected_at_read(
                    "size_mismatch",
                    id(entry),
                    f"{entry.where}: image {path} is {image.width}x{image.height} but the annotation says "
                    f"{entry.width}x{entry.height} (width x height): boxes are clipped to the file's size",
                )
        return image

    def _clipped(self, entry: Entry, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        if (entry.width, entry.height) != (image.width, image.height):  # not screened at construction
            outside, partly = count_outside(entry.boxes, image.width, image.height)
            for kind, count in (("boxes_outside", outside), ("boxes_clipped", partly)):
                if count:
                    self._corrected_at_read(
                        kind,
                        id(entry),
                        f"{entry.where}: {count} box(es) {'outside' if kind == 'boxes_outside' else 'partly outside'}"
                        f" the {image.width}x{image.height} image {'dropped' if kind == 'boxes_outside' else 'clipped'}",
                    )
        boxes, keep = clip_legacy(entry.boxes, image.width, image.height)
        kept = torch.nonzero(keep).reshape(-1).tolist()
        return boxes[keep], entry.labels[keep], kept

    def _masks(self, entry: Entry, image: Image.Image, kept: list[int]) -> torch.Tensor | None:
        """(G, H, W) bool masks of the kept boxes decoded from their COCO ``segmentation``, or None."""
        if entry.segmentations is None:
            return None
        try:
            decoded = [decode_segmentation(entry.segmentations[i], image.height, image.width) for i in kept]
        except ValueError as exc:
            raise DataError(f"{entry.where}: segmentation: {exc}") from None
        return stack_masks(decoded, image.height, image.width)

    def _build_record(self, index: int, rng: np.random.Generator) -> GroundingRecord:
        raise NotImplementedError

    def record(self, index: int) -> GroundingRecord:
        """The untransformed record of ``index`` (PIL image, boxes in the original frame) for inspection."""
        prompt_rng, _ = self._rngs(index)
        return self._build_record(index, prompt_rng)


_CORRECTION_TEXT = {
    "boxes_clipped": "{} box(es) partly outside their image (clipped to it)",
    "boxes_outside": "{} box(es) entirely outside their image (dropped)",
    "images_without_boxes": "{} image(s) left without a box by that (left out)",
    "size_mismatch": "{} image(s) not the size their annotation declares (the file's size used)",
    "duplicate_annotations": "{} annotation(s) repeating an earlier annotation id (exact repeats dropped, "
    "others kept)",
}


def _describe(corrections: dict[str, int]) -> str:
    return "; ".join(_CORRECTION_TEXT.get(k, k + ": {}").format(v) for k, v in corrections.items())
