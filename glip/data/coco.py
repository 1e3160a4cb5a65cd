"""COCO detection JSON as grounding data (official ``CocoGrounding`` + ``od_to_grounding``).

:class:`DetectionVocabulary` (class names -> the per-sample prompt) is shared with the ODVG detection records
(:mod:`glip.data.odvg`); the COCO field readers with the MDETR format (:mod:`glip.data.mdetr`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from glip.data.base import Entry, GroundingDataset, OnError
from glip.data.boxes import xywh_to_legacy_xyxy
from glip.data.masks import segmentation_problem
from glip.data.od_prompt import build_od_prompt, class_token_counts
from glip.data.reading import finite_numbers, id_sort_key, load_json
from glip.data.types import DataError, GroundingRecord
from glip.text.prompts import clean_name_od
from glip.text.tokenizer import MAX_QUERY_LEN

logger = logging.getLogger(__name__)

__all__ = [
    "CocoGroundingDataset",
    "DetectionVocabulary",
    "coco_box",
    "coco_image_fields",
    "coco_sections",
    "has_valid_annotation",
    "repeated_image_id",
]


class DetectionVocabulary:
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


def coco_sections(data: dict[str, Any], source: str, need: Sequence[str]) -> None:
    """:class:`DataError` unless every key of ``need`` is a list in ``data``."""
    for key in need:
        if not isinstance(data.get(key), list):
            raise DataError(f"{source}: missing or malformed {key!r} list (COCO format)")


def coco_image_fields(image: Any, position: int, source: str) -> tuple[Any, str, int | None, int | None, str]:
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


def coco_box(ann: dict[str, Any]) -> tuple[list[float] | None, str]:
    """(``[x, y, w, h]``, "") of an annotation, or (None, why)."""
    box = finite_numbers(ann.get("bbox"), 4)
    if box is None:
        return None, f"bbox {ann.get('bbox')!r} is not 4 finite numbers [x, y, w, h]"
    if box[2] < 0 or box[3] < 0:
        return None, f"bbox {ann.get('bbox')!r} has a negative width or height"
    return box, ""


def repeated_image_id(source: str, image_id: Any, first: Any, file_name: str) -> str:
    """The problem of an image id seen before: both images are bad records (whose boxes are whose is not
    known; ``glip eval`` refuses such a file too)."""
    earlier = f"{first[0]} and " if first else ""
    return (
        f"{source} image id {image_id!r} appears more than once ({earlier}{file_name}): which boxes belong to "
        "which image is unknown, so every image with that id is skipped"
    )


class AnnotationIds:
    """Repeated annotation ids: an exact repeat of an earlier annotation is dropped, a different annotation
    with a used id is kept; both are counted in ``dataset.corrections["duplicate_annotations"]``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.by_id: dict[Any, Any] = {}

    def seen(self, ann: dict[str, Any]) -> bool:
        """True when ``ann`` repeats an earlier annotation exactly (drop it)."""
        ann_id = ann.get("id")
        if ann_id is None or isinstance(ann_id, list | dict):
            return False
        if ann_id not in self.by_id:
            self.by_id[ann_id] = ann
            return False
        self.dataset._count("duplicate_annotations", 1)
        return self.by_id[ann_id] == ann


def coco_images(
    dataset: Any, data: dict[str, Any], check: Callable[[Any, Any, str], tuple[Any, str]] | None = None
) -> tuple[dict[Any, tuple[Any, ...]], set[Any]]:
    """The usable ``images`` of a COCO-style file: ``({id: (file_name, width, height[, extra]), ...},
    {ids of reported images})``. Bad and repeated-id images are reported through ``dataset._problem``.

    check: ``(image, image_id, file_name) -> (extra, problem)`` for format-specific fields (MDETR's caption);
    ``extra`` is appended to the image's tuple.
    """
    images: dict[Any, tuple[Any, ...]] = {}
    unusable: set[Any] = set()  # images already reported: their annotations are ignored quietly
    for position, image in enumerate(data["images"]):
        image_id, file_name, width, height, problem = coco_image_fields(image, position, dataset.source)
        if not problem and (image_id in images or image_id in unusable):
            problem = repeated_image_id(dataset.source, image_id, images.pop(image_id, None), file_name)
        extra: tuple[Any, ...] = ()
        if not problem and check is not None:
            value, problem = check(image, image_id, file_name)
            extra = (value,)
        if problem:
            dataset._problem(problem)
            unusable.add(image_id)
            continue
        images[image_id] = (file_name, width, height, *extra)
    return images, unusable


def coco_annotations(
    dataset: Any, data: dict[str, Any], images: Mapping[Any, Any], unusable: set[Any]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(position, annotation)`` for the annotations of usable images, crowd boxes and exact repeats left
    out; a non-object record or an unknown image id is reported through ``dataset._problem``."""
    repeats = AnnotationIds(dataset)
    for position, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            dataset._problem(f"{dataset.source} annotations[{position}]: not an object")
            continue
        image_id = ann.get("image_id")
        if image_id not in images:
            if image_id not in unusable:
                dataset._problem(f"{dataset.source} annotations[{position}]: unknown image_id {image_id!r}")
            continue
        if ann.get("iscrowd", 0) or repeats.seen(ann):
            continue
        yield position, ann


def has_valid_annotation(boxes_xywh: Sequence[Sequence[float]]) -> bool:
    """Official ``has_valid_annotation``: at least one box with w > 1 and h > 1."""
    return any(w > 1 and h > 1 for _, _, w, h in boxes_xywh)


class CocoGroundingDataset(DetectionVocabulary, GroundingDataset):
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
        coco_sections(data, self.source, ("images", "annotations", "categories"))

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

        images, unusable = coco_images(self, data)
        wanted_ids = None if image_ids is None else set(image_ids)

        per_image: dict[Any, list[tuple[list[float], int]]] = {}
        segmentations: dict[Any, list[Any]] = {}  # image id -> segmentation per box (None where absent)
        bad_images: dict[Any, list[str]] = {}
        for position, ann in coco_annotations(self, data, images, unusable):
            image_id = ann["image_id"]
            box, why = coco_box(ann)
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

        for image_id in sorted(images, key=id_sort_key):
            if wanted_ids is not None and image_id not in wanted_ids:
                continue
            file_name, width, height = images[image_id]
            where = f"{self.source} image id {image_id!r} ({file_name})"
            if image_id in bad_images:
                self._problem(f"{where}: " + "; ".join(bad_images[image_id]))
                continue
            anns = per_image.get(image_id, [])
            if remove_images_without_annotations and not has_valid_annotation([b for b, _ in anns]):
                continue
            segms = segmentations.get(image_id, [])
            self.entries.append(
                Entry(
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
        self._screen_boxes(drop_empty=remove_images_without_annotations)
        self._report_corrections()

    def _build_record(self, index: int, rng: np.random.Generator) -> GroundingRecord:
        entry = self.entries[index]
        image = self._read(entry)
        boxes, labels, kept = self._clipped(entry, image)
        masks = self._masks(entry, image, kept)
        return self._od_record(image, boxes, labels, entry.image_id, rng, masks)
