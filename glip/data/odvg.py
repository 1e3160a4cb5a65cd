"""MM-Grounding-DINO's ODVG JSONL: detection records (class-name prompts) and grounding records."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glip.data.base import Entry, GroundingDataset, OnError
from glip.data.boxes import xyxy_to_legacy_xyxy
from glip.data.coco import DetectionVocabulary
from glip.data.reading import (
    caption_problem,
    check_spans,
    finite_numbers,
    load_json,
    read_jsonl,
    token_lengths,
)
from glip.data.types import DataError, GroundingRecord
from glip.text.tokenizer import MAX_QUERY_LEN

__all__ = ["ODVGDataset"]


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


class ODVGDataset(DetectionVocabulary, GroundingDataset):
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
        lines = read_jsonl(jsonl, self._problem)

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

        pending: list[Entry] = []
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
        lengths = token_lengths([e.caption for e in pending if e.caption is not None])
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
        self._screen_boxes(drop_empty=False)  # an ODVG record without boxes is a valid negative
        self._report_corrections()

    @staticmethod
    def _xyxy(box: Any) -> tuple[list[float] | None, str]:
        values = finite_numbers(box, 4)
        if values is None:
            return None, f"bbox {box!r} is not 4 finite numbers [x1, y1, x2, y2]"
        if values[2] < values[0] or values[3] < values[1]:
            return None, f"bbox {box!r} has x2 < x1 or y2 < y1 (negative size)"
        return values, ""

    def _detection_entry(self, det: Any, where: str) -> tuple[Entry | None, str]:
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
        return Entry(
            file="",
            image_id="",
            boxes=xyxy_to_legacy_xyxy(torch.tensor(boxes, dtype=torch.float32)),
            labels=torch.tensor(labels, dtype=torch.int64),
            where=where,
        ), ""

    def _grounding_entry(self, grounding: Any, where: str) -> tuple[Entry | None, str]:
        if not isinstance(grounding, dict):
            return None, "needs a 'detection' or a 'grounding' object"
        caption = grounding.get("caption")
        why = caption_problem(caption)
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
            spans, why = check_spans(spans_field, caption)
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
        return Entry(
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
