"""MDETR / GoldG / Flickr30k-entities grounding JSON: COCO files with a caption per image."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glip.data.base import Entry, GroundingDataset, OnError
from glip.data.boxes import xywh_to_legacy_xyxy
from glip.data.coco import coco_annotations, coco_box, coco_images, coco_sections, has_valid_annotation
from glip.data.reading import caption_problem, check_spans, id_sort_key, load_json, token_lengths
from glip.data.types import GroundingRecord
from glip.text.prompts import Span
from glip.text.tokenizer import MAX_QUERY_LEN

logger = logging.getLogger(__name__)

__all__ = ["MDETRDataset"]


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
        coco_sections(data, self.source, ("images", "annotations"))

        def caption_of(image: Any, image_id: Any, file_name: str) -> tuple[Any, str]:
            caption = image.get("caption")
            why = caption_problem(caption)
            return caption, f"{self.source} image id {image_id!r} ({file_name}): {why}" if why else ""

        images, unusable = coco_images(self, data, caption_of)
        ids = sorted(images, key=id_sort_key)
        lengths = dict(zip(ids, token_lengths([images[i][3] for i in ids])))

        per_image: dict[Any, list[tuple[list[float], int, list[Span]]]] = {}
        bad_images: dict[Any, list[str]] = {}
        ignored = 0
        for position, ann in coco_annotations(self, data, images, unusable):
            image_id = ann["image_id"]
            name = f"annotation {ann.get('id', position)!r}"
            box, why = coco_box(ann)
            if box is None:
                bad_images.setdefault(image_id, []).append(f"{name}: {why}")
                continue
            spans_field = ann.get("tokens_positive", ann.get("tokens"))
            if isinstance(spans_field, list) and not spans_field:
                ignored += 1  # a box without any phrase: nothing to ground it to
                continue
            spans, why = check_spans(spans_field, images[image_id][3])
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
            if remove_images_without_annotations and not has_valid_annotation([b for b, _, _ in anns]):
                continue
            self.entries.append(
                Entry(
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
        self._screen_boxes(drop_empty=remove_images_without_annotations)
        self._report_corrections()

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
