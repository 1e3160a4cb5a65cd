"""Caption-only JSONL (image + caption, no boxes): the input of self-training / pseudo-labelling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from glip.data.base import Entry, GroundingDataset, OnError
from glip.data.reading import caption_problem, read_jsonl, token_lengths
from glip.data.types import GroundingRecord
from glip.text.tokenizer import MAX_QUERY_LEN

__all__ = ["CaptionDataset"]


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
        pending: list[Entry] = []
        for number, record in read_jsonl(jsonl, self._problem):
            where = f"{self.source} line {number}"
            image, caption = record.get("image"), record.get("caption")
            if not isinstance(image, str) or not image:
                self._problem(f"{where}: missing 'image' path")
                continue
            why = caption_problem(caption)
            if why:
                self._problem(f"{where} ({image}): {why}")
                continue
            pending.append(
                Entry(
                    file=image,
                    image_id=image,
                    boxes=torch.zeros((0, 4), dtype=torch.float32),
                    labels=torch.zeros((0,), dtype=torch.int64),
                    caption=caption,
                    where=f"{where} ({image})",
                )
            )
        for entry, count in zip(pending, token_lengths([e.caption or "" for e in pending])):
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
