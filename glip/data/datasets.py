"""Training datasets: detection (COCO JSON, ODVG), grounding (MDETR / GoldG / Flickr JSON, ODVG) and captions.

Every dataset returns :class:`~glip.data.types.Sample` and shares the same policies:

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
* Randomness (class sampling / shuffling, transform) comes from a generator seeded with
  ``(seed, epoch, index)``: call ``set_epoch(e)`` every epoch.
* Images are read without applying the EXIF orientation, like the official loader (annotations refer to the
  stored pixel grid); ``exif_transpose=True`` applies it (the default for :class:`CaptionDataset`, whose
  images are fed to the predictor, which applies it too).
"""

from __future__ import annotations

import json
import logging
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from glip.data.boxes import clip_legacy, xywh_to_legacy_xyxy, xyxy_to_legacy_xyxy
from glip.data.masks import decode_segmentation, segmentation_problem, stack_masks
from glip.data.od_prompt import build_od_prompt, class_token_counts
from glip.data.transforms import EvalTransform
from glip.data.types import DataError, GroundingRecord, Sample, make_sample
from glip.images import ImageError, load_image
from glip.text.prompts import Span, clean_name_od
from glip.text.tokenizer import MAX_QUERY_LEN, get_tokenizer

logger = logging.getLogger(__name__)

__all__ = [
    "CaptionDataset",
    "CocoGroundingDataset",
    "GroundingDataset",
    "MDETRDataset",
    "ODVGDataset",
    "load_json",
    "read_image",
]

OnError = Literal["skip", "raise"]
_ORIENTATION = 0x0112
#: problems kept in ``dataset.problems`` (the count in ``dataset.skipped`` is exact)
_MAX_PROBLEMS = 1000


# ----------------------------------------------------------------------------------------------- helpers


def load_json(source: str | Path | Mapping[str, Any], what: str = "annotation file") -> dict[str, Any]:
    """A JSON object from a path (or a dict, returned as is); :class:`DataError` naming the file otherwise."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def read_image(path: str | Path, exif_transpose: bool = False) -> Image.Image:
    """RGB PIL image of a file. ``exif_transpose=False`` (official ``pil_loader``) ignores the EXIF orientation
    so that the pixels are in the frame the annotations were made in. Raises :class:`ImageError`."""
    path = Path(path)
    if exif_transpose:
        return load_image(path)
    if not path.exists():
        raise ImageError(f"image not found: {path}")
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an image")
    try:
        with Image.open(path) as opened:
            opened.load()
            exif = opened.getexif()  # cached: load_image's exif_transpose then sees no orientation
            if _ORIENTATION in exif:
                del exif[_ORIENTATION]
            return load_image(opened).copy()
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"{path} is corrupt, truncated or too large: {exc}") from None


def _finite_numbers(values: Any, count: int) -> list[float] | None:
    if not isinstance(values, list | tuple) or len(values) != count:
        return None
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        out.append(float(value))
    return out


def _check_spans(spans: Any, caption: str) -> tuple[list[Span] | None, str]:
    """(spans, "") or (None, why)."""
    if not isinstance(spans, list | tuple) or not spans:
        return None, f"tokens_positive must be a non-empty list of [beg, end] spans, got {spans!r}"
    out: list[Span] = []
    for span in spans:
        if (
            not isinstance(span, list | tuple)
            or len(span) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in span)
        ):
            return None, f"span {span!r} is not [beg, end] with integer positions"
        beg, end = int(span[0]), int(span[1])
        if beg < 0 or end > len(caption) or end <= beg:
            return (
                None,
                f"span [{beg}, {end}] lies outside the caption ({len(caption)} characters) or is empty",
            )
        out.append((beg, end))
    return out, ""


def _caption_problem(caption: Any) -> str:
    if not isinstance(caption, str):
        return f"caption must be a string, got {type(caption).__name__}"
    if not any(ch.isalnum() for ch in caption):
        return f"caption {caption!r} is empty or has no letter or digit"
    return ""


def _token_lengths(captions: Sequence[str]) -> list[int]:
    if not captions:
        return []
    tokenizer = get_tokenizer()
    lengths: list[int] = []
    for start in range(0, len(captions), 4096):
        chunk = list(captions[start : start + 4096])
        lengths.extend(len(ids) for ids in tokenizer(chunk, truncation=False)["input_ids"])
    return lengths


def _id_sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int) and not isinstance(value, bool) else (1, str(value))


@dataclass
class _Entry:
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


# ------------------------------------------------------------------------------------------- base class


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
        self.entries: list[_Entry] = []
        self._bad: set[int] = set()

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

    def _read(self, entry: _Entry) -> Image.Image:
        path = self._image_path(entry.file)
        try:
            image = read_image(path, self.exif_transpose)
        except ImageError as exc:
            raise DataError(f"{entry.where}: {exc}") from None
        if entry.width is not None and entry.height is not None:
            if (image.width, image.height) != (entry.width, entry.height):
                raise DataError(
                    f"{entry.where}: image {path} is {image.width}x{image.height} but the annotation says "
                    f"{entry.width}x{entry.height} (width x height)"
                )
        return image

    def _clipped(self, entry: _Entry, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        boxes, keep = clip_legacy(entry.boxes, image.width, image.height)
        kept = torch.nonzero(keep).reshape(-1).tolist()
        return boxes[keep], entry.labels[keep], kept

    def _masks(self, entry: _Entry, image: Image.Image, kept: list[int]) -> torch.Tensor | None:
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


# ----------------------------------------------------------------------------- detection -> grounding


class _DetectionVocabulary:
    """Class vocabulary of a detection dataset and the per-sample prompt (official od_to_grounding)."""

    def _init_vocabulary(
        self,
        names: Sequence[str],
        source: str,
        num_negatives: int,
        shuffle_classes: bool,
        separator: str,
        max_len: int,
    ) -> None:
        self.class_names: dict[int, str] = {}
        for i, name in enumerate(names):
            if not isinstance(name, str):
                raise DataError(f"{source}: category {i} has a non-string name {name!r}")
            cleaned = clean_name_od(name)
            if not any(ch.isalnum() for ch in cleaned):
                raise DataError(
                    f"{source}: category {i} {name!r} is empty after cleaning ({cleaned!r}): it would get no token"
                )
            self.class_names[i + 1] = cleaned
        if not self.class_names:
            raise DataError(f"{source}: no categories")
        self.num_negatives = int(num_negatives)
        self.shuffle_classes = bool(shuffle_classes)
        self.separator = separator
        self.all_labels = list(self.class_names)
        self.token_counts = class_token_counts(self.class_names, separator)
        full = sum(self.token_counts.values()) + 1  # [CLS]/[SEP] minus the last separator's "."
        if not shuffle_classes and self.num_negatives < 0 and full > max_len:
            logger.warning(
                "%s: the %d class names take ~%d tokens > %d: each caption keeps the image's classes and only "
                "as many other classes as fit",
                source,
                len(self.class_names),
                full,
                max_len,
            )

    def _od_record(
        self,
        image: Image.Image,
        boxes: torch.Tensor,
        labels: torch.Tensor,
        image_id: str,
        rng: np.random.Generator,
        masks: torch.Tensor | None = None,
    ) -> GroundingRecord:
        prompt = build_od_prompt(
            labels.tolist(),
            self.all_labels,
            self.class_names,
            self.token_counts,
            num_negatives=self.num_negatives,
            shuffle=self.shuffle_classes,
            rng=rng,
            max_len=self.max_len,  # type: ignore[attr-defined]
            separator=self.separator,
        )
        if prompt.dropped_positives:
            logger.info(
                "%s: %d positive classes did not fit in the prompt; their boxes are dropped",
                image_id,
                len(prompt.dropped_positives),
            )
        keep = torch.tensor([int(lab) in prompt.spans for lab in labels.tolist()], dtype=torch.bool)
        boxes, labels = boxes[keep].reshape(-1, 4), labels[keep].reshape(-1)
        return GroundingRecord(
            image=image,
            boxes=boxes,
            labels=labels,
            tokens_positive=[[prompt.spans[int(lab)]] for lab in labels.tolist()],
            caption=prompt.caption,
            image_id=image_id,
            # every class name of the prompt, boxed or not: GLIPv2 category propagation (glip/text/phrases.py)
            extra={"phrase_spans": [[prompt.spans[lab]] for lab in prompt.labels]},
            masks=None if masks is None else masks[keep],
        )


def _coco_sections(data: dict[str, Any], source: str, need: Sequence[str]) -> None:
    for key in need:
        if not isinstance(data.get(key), list):
            raise DataError(f"{source}: missing or malformed {key!r} list (COCO format)")


def _coco_image_fields(
    image: Any, position: int, source: str
) -> tuple[Any, str, int | None, int | None, str]:
    """(id, file_name, width, height, problem)."""
    if not isinstance(image, dict) or "id" not in image:
        return None, "", None, None, f"{source} images[{position}]: not an object with an 'id'"
    image_id = image["id"]
    file_name = image.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        return image_id, "", None, None, f"{source} image id {image_id!r}: missing 'file_name'"
    width, height = image.get("width"), image.get("height")
    if width is None or height is None:
        return image_id, file_name, None, None, ""
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        return (
            image_id,
            file_name,
            None,
            None,
            f"{source} image id {image_id!r}: bad width/height {width!r}x{height!r}",
        )
    return image_id, file_name, int(width), int(height), ""


def _coco_box(ann: dict[str, Any]) -> tuple[list[float] | None, str]:
    box = _finite_numbers(ann.get("bbox"), 4)
    if box is None:
        return None, f"bbox {ann.get('bbox')!r} is not 4 finite numbers [x, y, w, h]"
    if box[2] < 0 or box[3] < 0:
        return None, f"bbox {ann.get('bbox')!r} has a negative width or height"
    return box, ""


def _valid_annotation(boxes_xywh: Sequence[Sequence[float]]) -> bool:
    """Official ``has_valid_annotation``: at least one box with w > 1 and h > 1."""
    return any(w > 1 and h > 1 for _, _, w, h in boxes_xywh)


class CocoGroundingDataset(_DetectionVocabulary, GroundingDataset):
    """COCO detection JSON as grounding data: the class names become the caption (official
    ``CocoGrounding`` + ``od_to_grounding``).

    Per sample: the image's positive classes plus up to ``num_negatives`` sampled negative classes, cleaned with
    ``clean_name_od``, shuffled, joined with ``separator``, within ``max_len`` tokens (negatives dropped first,
    then positives with their boxes); each box gets the char span of its class name. Deterministic mode
    ``shuffle_classes=False, num_negatives=-1``: every class in category order (official ``DISABLE_SHUFFLE``).

    Labels: ``1 + position of the category in the JSON "categories" list`` (official contiguous ids,
    ``json_category_id_to_contiguous_id``); ``label_to_category_id`` maps back.

    Args:
        ann_file: path of the COCO JSON, or the loaded dict.
        image_dir: folder the ``file_name`` s are relative to.
        transform: :class:`~glip.data.transforms.TrainTransform` / ``EvalTransform`` (None: ``EvalTransform()``).
        num_negatives: official ``RANDOM_SAMPLE_NEG`` (85); -1: all other classes.
        shuffle_classes: shuffle the class order (official: not ``DISABLE_SHUFFLE``).
        max_len: token limit of the caption (256).
        seed: base seed of the per-sample randomness.
        category_subset: only these categories (ids or names) form the vocabulary; annotations of the others
            are ignored (not errors).
        image_ids: only these images.
        on_error: "skip" or "raise".
        remove_images_without_annotations: leave out images without a usable box (official, for training).
        separator: ``DATASETS.SEPARATION_TOKENS`` (". ").
        exif_transpose: apply the EXIF orientation when reading images (official: no).
        masks: read the annotations' COCO ``segmentation`` (polygons, uncompressed or compressed RLE; needs
            pycocotools) into ``Target.masks`` (G, H, W) bool, resized / flipped with the image. An image gets
            masks only when every one of its boxes has one (else ``Target.masks`` is None); a malformed
            segmentation makes its image a bad record. Default False: segmentations are not read.
    """

    source_kind = "coco"

    def __init__(
        self,
        ann_file: str | Path | Mapping[str, Any],
        image_dir: str | Path | None,
        transform: Any = None,
        num_negatives: int = 85,
        shuffle_classes: bool = True,
        max_len: int = MAX_QUERY_LEN,
        seed: int = 0,
        category_subset: Sequence[int | str] | None = None,
        image_ids: Sequence[Any] | None = None,
        on_error: OnError = "skip",
        remove_images_without_annotations: bool = True,
        separator: str = ". ",
        exif_transpose: bool = False,
        masks: bool = False,
    ) -> None:
        GroundingDataset.__init__(self, image_dir, transform, on_error, max_len, seed, exif_transpose)
        self.source = str(ann_file) if not isinstance(ann_file, Mapping) else "<COCO dict>"
        data = load_json(ann_file)
        _coco_sections(data, self.source, ("images", "annotations", "categories"))

        all_categories: dict[Any, str] = {}
        for position, cat in enumerate(data["categories"]):
            if not isinstance(cat, dict) or "id" not in cat or not isinstance(cat.get("name"), str):
                raise DataError(f"{self.source} categories[{position}]: needs an 'id' and a string 'name'")
            if cat["id"] in all_categories:
                raise DataError(f"{self.source}: category id {cat['id']!r} appears twice")
            all_categories[cat["id"]] = cat["name"]
        selected = list(all_categories)
        if category_subset is not None:
            wanted = set(category_subset)
            unknown = wanted - set(all_categories) - set(all_categories.values())
            if unknown:
                raise DataError(
                    f"{self.source}: category_subset has unknown categories {sorted(map(str, unknown))}"
                )
            selected = [cid for cid, name in all_categories.items() if cid in wanted or name in wanted]
        self.category_id_to_label = {cid: i + 1 for i, cid in enumerate(selected)}
        self.label_to_category_id = {label: cid for cid, label in self.category_id_to_label.items()}
        self._init_vocabulary(
            [all_categories[cid] for cid in selected],
            self.source,
            num_negatives,
            shuffle_classes,
            separator,
            max_len,
        )

        images: dict[Any, tuple[str, int | None, int | None]] = {}
        unusable: set[Any] = set()  # images already reported: their annotations are ignored quietly
        for position, image in enumerate(data["images"]):
            image_id, file_name, width, height, problem = _coco_image_fields(image, position, self.source)
            if problem:
                self._problem(problem)
                unusable.add(image_id)
                continue
            images[image_id] = (file_name, width, height)
        wanted_ids = None if image_ids is None else set(image_ids)

        per_image: dict[Any, list[tuple[list[float], int]]] = {}
        segmentations: dict[Any, list[Any]] = {}  # image id -> segmentation per box (None where absent)
        bad_images: dict[Any, list[str]] = {}
        for position, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict):
                self._problem(f"{self.source} annotations[{position}]: not an object")
                continue
            image_id = ann.get("image_id")
            if image_id not in images:
                if image_id not in unusable:
                    self._problem(f"{self.source} annotations[{position}]: unknown image_id {image_id!r}")
                continue
            if ann.get("iscrowd", 0):
                continue
            box, why = _coco_box(ann)
            category = ann.get("category_id")
            if box is None:
                bad_images.setdefault(image_id, []).append(f"annotation {ann.get('id', position)!r}: {why}")
                continue
            if category not in all_categories:
                bad_images.setdefault(image_id, []).append(
                    f"annotation {ann.get('id', position)!r}: unknown category_id {category!r}"
                )
                continue
            if category not in self.category_id_to_label:
                continue  # outside category_subset
            segmentation = ann.get("segmentation") if masks else None
            if segmentation in ([], {}):
                segmentation = None  # converted datasets write empty polygon lists: no mask
            if segmentation is not None and segmentation_problem(segmentation):
                bad_images.setdefault(image_id, []).append(
                    f"annotation {ann.get('id', position)!r}: {segmentation_problem(segmentation)}"
                )
                continue
            per_image.setdefault(image_id, []).append((box, self.category_id_to_label[category]))
            segmentations.setdefault(image_id, []).append(segmentation)

        for image_id in sorted(images, key=_id_sort_key):
            if wanted_ids is not None and image_id not in wanted_ids:
                continue
            file_name, width, height = images[image_id]
            where = f"{self.source} image id {image_id!r} ({file_name})"
            if image_id in bad_images:
                self._problem(f"{where}: " + "; ".join(bad_images[image_id]))
                continue
            anns = per_image.get(image_id, [])
            if remove_images_without_annotations and not _valid_annotation([b for b, _ in anns]):
                continue
            segms = segmentations.get(image_id, [])
            self.entries.append(
                _Entry(
                    file=file_name,
                    image_id=str(image_id),
                    boxes=xywh_to_legacy_xyxy(torch.tensor([b for b, _ in anns], dtype=torch.float32)),
                    labels=torch.tensor([lab for _, lab in anns], dtype=torch.int64),
                    width=width,
                    height=height,
                    where=where,
                    segmentations=segms if segms and all(m is not None for m in segms) else None,
                )
            )

    def _build_record(self, index: int, rng: np.random.Generator) -> GroundingRecord:
        entry = self.entries[index]
        image = self._read(entry)
        boxes, labels, kept = self._clipped(entry, image)
        masks = self._masks(entry, image, kept)
        return self._od_record(image, boxes, labels, entry.image_id, rng, masks)


# --------------------------------------------------------------------------------------------- grounding


class MDETRDataset(GroundingDataset):
    """MDETR / GoldG / Flickr30k-entities style COCO JSON (official ``ModulatedDataset``).

    ``images[i]`` has ``id``, ``file_name``, ``caption`` (and ``width``, ``height``); each annotation has a COCO
    ``bbox`` ``[x, y, w, h]`` and ``tokens_positive`` ``[[beg, end], ...]`` (char spans into its image's caption;
    ``tokens`` is read when ``tokens_positive`` is absent; an annotation with an empty list is ignored, with a
    warning). Boxes become legacy xyxy (``x2 = x + w - 1``). Labels: the annotation's ``category_id`` when it is
    an integer >= 1 (MDETR files use 1), else 1.
    """

    source_kind = "mdetr"

    def __init__(
        self,
        ann_file: str | Path | Mapping[str, Any],
        image_dir: str | Path | None,
        transform: Any = None,
        max_len: int = MAX_QUERY_LEN,
        seed: int = 0,
        on_error: OnError = "skip",
        remove_images_without_annotations: bool = True,
        exif_transpose: bool = False,
    ) -> None:
        super().__init__(image_dir, transform, on_error, max_len, seed, exif_transpose)
        self.source = str(ann_file) if not isinstance(ann_file, Mapping) else "<MDETR dict>"
        data = load_json(ann_file)
        _coco_sections(data, self.source, ("images", "annotations"))

        images: dict[Any, tuple[str, int | None, int | None, str]] = {}
        unusable: set[Any] = set()  # images already reported: their annotations are ignored quietly
        for position, image in enumerate(data["images"]):
            image_id, file_name, width, height, problem = _coco_image_fields(image, position, self.source)
            caption = image.get("caption") if isinstance(image, dict) else None
            if not problem and _caption_problem(caption):
                problem = f"{self.source} image id {image_id!r} ({file_name}): {_caption_problem(caption)}"
            if problem:
                self._problem(problem)
                unusable.add(image_id)
                continue
            images[image_id] = (file_name, width, height, caption)
        ids = sorted(images, key=_id_sort_key)
        lengths = dict(zip(ids, _token_lengths([images[i][3] for i in ids])))

        per_image: dict[Any, list[tuple[list[float], int, list[Span]]]] = {}
        bad_images: dict[Any, list[str]] = {}
        ignored = 0
        for position, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict):
                self._problem(f"{self.source} annotations[{position}]: not an object")
                continue
            image_id = ann.get("image_id")
            if image_id not in images:
                if image_id not in unusable:
                    self._problem(f"{self.source} annotations[{position}]: unknown image_id {image_id!r}")
                continue
            if ann.get("iscrowd", 0):
                continue
            name = f"annotation {ann.get('id', position)!r}"
            box, why = _coco_box(ann)
            if box is None:
                bad_images.setdefault(image_id, []).append(f"{name}: {why}")
                continue
            spans_field = ann.get("tokens_positive", ann.get("tokens"))
            if isinstance(spans_field, list) and not spans_field:
                ignored += 1  # a box without any phrase: nothing to ground it to
                continue
            spans, why = _check_spans(spans_field, images[image_id][3])
            if spans is None:
                bad_images.setdefault(image_id, []).append(f"{name}: {why}")
                continue
            category = ann.get("category_id", 1)
            label = (
                category
                if isinstance(category, int) and not isinstance(category, bool) and category >= 1
                else 1
            )
            per_image.setdefault(image_id, []).append((box, label, spans))

        if ignored:
            logger.warning(
                "%s: ignored %d annotations with an empty tokens_positive list", self.source, ignored
            )
        for image_id in ids:
            file_name, width, height, caption = images[image_id]
            where = f"{self.source} image id {image_id!r} ({file_name})"
            if lengths[image_id] > max_len:
                self._problem(
                    f"{where}: caption has {lengths[image_id]} tokens > {max_len}; refused (never truncated)"
                )
                continue
            if image_id in bad_images:
                self._problem(f"{where}: " + "; ".join(bad_images[image_id]))
                continue
            anns = per_image.get(image_id, [])
            if remove_images_without_annotations and not _valid_annotation([b for b, _, _ in anns]):
                continue
            self.entries.append(
                _Entry(
                    file=file_name,
                    image_id=str(image_id),
                    boxes=xywh_to_legacy_xyxy(torch.tensor([b for b, _, _ in anns], dtype=torch.float32)),
                    labels=torch.tensor([lab for _, lab, _ in anns], dtype=torch.int64),
                    width=width,
                    height=height,
                    caption=caption,
                    tokens_positive=[spans for _, _, spans in anns],
                    where=where,
                )
            )

    def _build_record(self, index: int, rng: np.random.Generator) -> GroundingRecord:
        entry = self.entries[index]
        image = self._read(entry)
        boxes, labels, kept = self._clipped(entry, image)
        return GroundingRecord(
            image=image,
            boxes=boxes,
            labels=labels,
            tokens_positive=[entry.tokens_positive[i] for i in kept],
            caption=entry.caption or "",
            image_id=entry.image_id,
        )


# ------------------------------------------------------------------------------------------------- ODVG


def _read_jsonl(path: str | Path, report: Any) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every well-formed line; ``report(message)`` for the others."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    records: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                report(f"{path} line {number}: malformed JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(record, dict):
                report(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
                continue
            records.append((number, record))
    return records


def _load_label_map(label_map: str | Path | Mapping[Any, str]) -> dict[int, str]:
    source = label_map if isinstance(label_map, Mapping) else load_json(label_map, "label map")
    out: dict[int, str] = {}
    for key, name in source.items():
        try:
            label = int(key)
        except (TypeError, ValueError):
            raise DataError(f"label map: key {key!r} is not an integer label") from None
        if not isinstance(name, str):
            raise DataError(f"label map: label {key!r} has a non-string name {name!r}")
        out[label] = name
    return out


class ODVGDataset(_DetectionVocabulary, GroundingDataset):
    """MM-Grounding-DINO's ODVG JSONL (mmdetection ``ODVGDataset``): one JSON object per line,
    ``{"filename", "height", "width"}`` plus either

    * ``"detection": {"instances": [{"bbox": [x1, y1, x2, y2], "label": int, "category": str}, ...]}``: handled
      like :class:`CocoGroundingDataset` (class-name prompt with sampled negatives). Class names come from
      ``label_map`` (``{"0": "person", ...}``, a path or a dict) or, without one, from the instances'
      ``category`` fields. Labels: ``1 + position of the ODVG label in the sorted label map``.
    * ``"grounding": {"caption": str, "regions": [{"bbox": box or [box, ...], "phrase": str,
      "tokens_positive": [[beg, end], ...]}, ...]}``: every box of region r gets r's spans and label ``r + 1``.
      Without ``tokens_positive`` the first occurrence of ``phrase`` in the caption is used.

    ODVG boxes are continuous xyxy (``x2 = x + w``); they are converted to the legacy convention with
    ``x2 - 1, y2 - 1`` so that an ODVG file made from COCO (mmdetection ``coco2odvg``) gives the same boxes as
    the COCO file. Boxes outside the image or smaller than a pixel are dropped (as mmdetection does).
    """

    source_kind = "odvg"

    def __init__(
        self,
        jsonl: str | Path,
        image_dir: str | Path | None,
        transform: Any = None,
        label_map: str | Path | Mapping[Any, str] | None = None,
        num_negatives: int = 85,
        shuffle_classes: bool = True,
        max_len: int = MAX_QUERY_LEN,
        seed: int = 0,
        on_error: OnError = "skip",
        separator: str = ". ",
        exif_transpose: bool = False,
    ) -> None:
        GroundingDataset.__init__(self, image_dir, transform, on_error, max_len, seed, exif_transpose)
        self.source = str(jsonl)
        lines = _read_jsonl(jsonl, self._problem)

        names = _load_label_map(label_map) if label_map is not None else None
        if names is None:  # from the instances' "category" fields
            found: dict[int, str] = {}
            for number, record in lines:
                det = record.get("detection")
                for inst in det.get("instances", []) if isinstance(det, dict) else []:
                    if isinstance(inst, dict) and isinstance(inst.get("category"), str):
                        label = inst.get("label")
                        if (
                            isinstance(label, int)
                            and found.setdefault(label, inst["category"]) != inst["category"]
                        ):
                            raise DataError(
                                f"{self.source} line {number}: label {label} is {inst['category']!r} here and "
                                f"{found[label]!r} before; pass a label_map"
                            )
            names = found
        self.odvg_label_to_label = {odvg: i + 1 for i, odvg in enumerate(sorted(names))}
        self.label_to_odvg_label = {label: odvg for odvg, label in self.odvg_label_to_label.items()}
        has_detection = any("detection" in record for _, record in lines)
        if has_detection and not names:
            raise DataError(
                f"{self.source}: detection records need a label_map or 'category' in the instances"
            )
        if names:
            self._init_vocabulary(
                [names[k] for k in sorted(names)],
                self.source,
                num_negatives,
                shuffle_classes,
                separator,
                max_len,
            )

        pending: list[_Entry] = []
        for number, record in lines:
            where = f"{self.source} line {number}"
            file_name = record.get("filename")
            if not isinstance(file_name, str) or not file_name:
                self._problem(f"{where}: missing 'filename'")
                continue
            where = f"{where} ({file_name})"
            width, height = record.get("width"), record.get("height")
            if width is not None or height is not None:
                if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
                    self._problem(f"{where}: bad width/height {width!r}x{height!r}")
                    continue
            entry, why = (
                self._detection_entry(record["detection"], where)
                if "detection" in record
                else self._grounding_entry(record.get("grounding"), where)
            )
            if entry is None:
                self._problem(f"{where}: {why}")
                continue
            entry.file, entry.image_id, entry.width, entry.height = file_name, file_name, width, height
            pending.append(entry)
        lengths = _token_lengths([e.caption for e in pending if e.caption is not None])
        grounding_lengths = iter(lengths)
        for entry in pending:
            if entry.caption is not None:
                count = next(grounding_lengths)
                if count > max_len:
                    self._problem(
                        f"{entry.where}: caption has {count} tokens > {max_len}; refused (never truncated)"
                    )
                    continue
            self.entries.append(entry)

    @staticmethod
    def _xyxy(box: Any) -> tuple[list[float] | None, str]:
        values = _finite_numbers(box, 4)
        if values is None:
            return None, f"bbox {box!r} is not 4 finite numbers [x1, y1, x2, y2]"
        if values[2] < values[0] or values[3] < values[1]:
            return None, f"bbox {box!r} has x2 < x1 or y2 < y1 (negative size)"
        return values, ""

    def _detection_entry(self, det: Any, where: str) -> tuple[_Entry | None, str]:
        if not isinstance(det, dict) or not isinstance(det.get("instances"), list):
            return None, "'detection' must be an object with an 'instances' list"
        boxes, labels = [], []
        for j, inst in enumerate(det["instances"]):
            if not isinstance(inst, dict):
                return None, f"instance {j} is not an object"
            box, why = self._xyxy(inst.get("bbox"))
            if box is None:
                return None, f"instance {j}: {why}"
            label = inst.get("label")
            if isinstance(label, str) and label.strip().lstrip("-").isdigit():
                label = int(label)  # mmdetection reads labels through str() / int()
            if label not in self.odvg_label_to_label:
                return None, f"instance {j}: unknown label {label!r} (not in the label map)"
            boxes.append(box)
            labels.append(self.odvg_label_to_label[label])
        return _Entry(
            file="",
            image_id="",
            boxes=xyxy_to_legacy_xyxy(torch.tensor(boxes, dtype=torch.float32)),
            labels=torch.tensor(labels, dtype=torch.int64),
            where=where,
        ), ""

    def _grounding_entry(self, grounding: Any, where: str) -> tuple[_Entry | None, str]:
        if not isinstance(grounding, dict):
            return None, "needs a 'detection' or a 'grounding' object"
        caption = grounding.get("caption")
        why = _caption_problem(caption)
        if why:
            return None, why
        regions = grounding.get("regions", [])
        if not isinstance(regions, list):
            return None, "'regions' must be a list"
        boxes, labels, spans_list = [], [], []
        for r, region in enumerate(regions):
            if not isinstance(region, dict):
                return None, f"region {r} is not an object"
            spans_field = region.get("tokens_positive")
            phrase = region.get("phrase")
            if not spans_field and isinstance(phrase, str) and phrase and phrase in caption:
                start = caption.index(phrase)
                spans_field = [[start, start + len(phrase)]]
            spans, why = _check_spans(spans_field, caption)
            if spans is None:
                return None, f"region {r} ({phrase!r}): {why}"
            bbox = region.get("bbox")
            region_boxes = (
                bbox if isinstance(bbox, list) and bbox and isinstance(bbox[0], list | tuple) else [bbox]
            )
            for box_value in region_boxes:
                box, why = self._xyxy(box_value)
                if box is None:
                    return None, f"region {r} ({phrase!r}): {why}"
                boxes.append(box)
                labels.append(r + 1)
                spans_list.append(spans)
        return _Entry(
            file="",
            image_id="",
            boxes=xyxy_to_legacy_xyxy(torch.tensor(boxes, dtype=torch.float32)),
            labels=torch.tensor(labels, dtype=torch.int64),
            caption=caption,
            tokens_positive=spans_list,
            where=where,
        ), ""

    def _build_record(self, index: int, rng: np.random.Generator) -> GroundingRecord:
        entry = self.entries[index]
        image = self._read(entry)
        boxes, labels, kept = self._clipped(entry, image)
        if entry.caption is None:
            return self._od_record(image, boxes, labels, entry.image_id, rng)
        return GroundingRecord(
            image=image,
            boxes=boxes,
            labels=labels,
            tokens_positive=[entry.tokens_positive[i] for i in kept],
            caption=entry.caption,
            image_id=entry.image_id,
        )


# ---------------------------------------------------------------------------------------------- captions


class CaptionDataset(GroundingDataset):
    """Image + caption pairs without boxes (input of self-training / pseudo-labelling): JSONL lines
    ``{"image": path, "caption": str}`` (paths relative to ``image_dir`` or absolute). Every sample has zero
    boxes. Images are read with the EXIF orientation applied (as the predictor does)."""

    source_kind = "caption"

    def __init__(
        self,
        jsonl: str | Path,
        image_dir: str | Path | None,
        transform: Any = None,
        max_len: int = MAX_QUERY_LEN,
        seed: int = 0,
        on_error: OnError = "skip",
        exif_transpose: bool = True,
    ) -> None:
        super().__init__(image_dir, transform, on_error, max_len, seed, exif_transpose)
        self.source = str(jsonl)
        pending: list[_Entry] = []
        for number, record in _read_jsonl(jsonl, self._problem):
            where = f"{self.source} line {number}"
            image, caption = record.get("image"), record.get("caption")
            if not isinstance(image, str) or not image:
                self._problem(f"{where}: missing 'image' path")
                continue
            why = _caption_problem(caption)
            if why:
                self._problem(f"{where} ({image}): {why}")
                continue
            pending.append(
                _Entry(
                    file=image,
                    image_id=image,
                    boxes=torch.zeros((0, 4), dtype=torch.float32),
                    labels=torch.zeros((0,), dtype=torch.int64),
                    caption=caption,
                    where=f"{where} ({image})",
                )
            )
        for entry, count in zip(pending, _token_lengths([e.caption or "" for e in pending])):
            if count > max_len:
                self._problem(
                    f"{entry.where}: caption has {count} tokens > {max_len}; refused (never truncated)"
                )
                continue
            self.entries.append(entry)

    def _build_record(self, index: int, rng: np.random.Generator) -> GroundingRecord:
        entry = self.entries[index]
        image = self._read(entry)
        return GroundingRecord(
            image=image,
            boxes=entry.boxes,
            labels=entry.labels,
            tokens_positive=[],
            caption=entry.caption or "",
            image_id=entry.image_id,
        )
