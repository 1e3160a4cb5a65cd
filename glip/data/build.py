"""Build a training dataset from annotation files, recognising their format.

* ``*.jsonl`` whose records have ``"detection"`` or ``"grounding"``: ODVG (MM-Grounding-DINO).
* ``*.jsonl`` whose records have ``"image"`` and ``"caption"``: caption-only (no boxes).
* ``*.json`` whose images carry a ``"caption"`` (any of them: an MDETR file whose first image lacks one is
  still MDETR, and that image a bad record): MDETR / GoldG style grounding.
* any other ``*.json``: COCO detection (categories become the prompt).

A ``.jsonl`` file's format is decided by its first line that is a JSON object; lines before it that are not
(invalid UTF-8, not JSON, ``null``, a number) are skipped here and reported as bad records by the reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from glip.data.caption_only import CaptionDataset
from glip.data.coco import CocoGroundingDataset
from glip.data.few_shot import few_shot_subset
from glip.data.mdetr import MDETRDataset
from glip.data.mixed import MixedDataset
from glip.data.odvg import ODVGDataset
from glip.data.reading import iter_jsonl, load_json
from glip.data.types import DataError


def detect_format(path: str | Path) -> str:
    """One of ``odvg``, ``captions``, ``mdetr``, ``coco``; :class:`DataError` if unrecognisable."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"annotation file not found: {path}")
    if path.suffix == ".jsonl":
        bad: list[str] = []
        for number, record in iter_jsonl(path, bad.append):
            if "detection" in record or "grounding" in record:
                return "odvg"
            if "caption" in record and "image" in record:
                return "captions"
            raise DataError(f"{path} line {number}: neither ODVG nor caption-only (keys {sorted(record)})")
        if bad:
            raise DataError(f"{path} has no JSON object line ({len(bad)} bad line(s); first: {bad[0]})")
        raise DataError(f"{path} is empty")
    data = load_json(path)
    if "images" not in data:
        raise DataError(f"{path}: not a COCO-style JSON (no 'images')")
    images = data.get("images") or []
    if not isinstance(images, list):
        return "coco"  # the reader names the malformed 'images'
    return "mdetr" if any(isinstance(image, dict) and "caption" in image for image in images) else "coco"


def build_dataset(
    ann_file: str | Path,
    image_dir: str | Path | None,
    transform: Any,
    shots: int = 0,
    seed: int = 0,
    on_error: str = "skip",
    label_map: str | Path | None = None,
    prompt_options: Mapping[str, Any] | None = None,
) -> Any:
    """The dataset for one annotation file (see the module docstring). ``shots`` > 0: k-shot COCO subset.

    ``prompt_options``: how COCO detection annotations become prompts, passed to
    :class:`~glip.data.coco.CocoGroundingDataset` (``num_negatives``, ``shuffle_classes``, ``separator``).
    """
    kind = detect_format(ann_file)
    if shots and kind != "coco":
        raise DataError(f"--shots needs COCO detection annotations; {ann_file} is {kind}")
    if prompt_options and kind != "coco":
        raise DataError(f"prompt options apply to COCO detection annotations; {ann_file} is {kind}")
    if kind == "odvg":
        return ODVGDataset(ann_file, image_dir, transform, label_map=label_map, seed=seed, on_error=on_error)  # type: ignore[arg-type]
    if kind == "captions":
        return CaptionDataset(ann_file, image_dir, transform, seed=seed, on_error=on_error)  # type: ignore[arg-type]
    if kind == "mdetr":
        return MDETRDataset(ann_file, image_dir, transform, seed=seed, on_error=on_error)  # type: ignore[arg-type]
    source: Any = ann_file
    if shots:
        source = few_shot_subset(load_json(ann_file), shots, seed)
    return CocoGroundingDataset(
        source, image_dir, transform, seed=seed, on_error=on_error, **(prompt_options or {})
    )  # type: ignore[arg-type]


def build_training_set(
    ann_files: Sequence[str | Path],
    image_dirs: Sequence[str | Path | None],
    transform: Any,
    weights: Sequence[float] | None = None,
    shots: int = 0,
    seed: int = 0,
    on_error: str = "skip",
) -> Any:
    """One dataset, or a :class:`MixedDataset` of several (by weight, default proportional to their size)."""
    if len(image_dirs) == 1 and len(ann_files) > 1:
        image_dirs = list(image_dirs) * len(ann_files)
    if len(image_dirs) != len(ann_files):
        raise DataError(f"{len(ann_files)} annotation files but {len(image_dirs)} image directories")
    datasets = [
        build_dataset(a, d, transform, shots=shots, seed=seed, on_error=on_error)
        for a, d in zip(ann_files, image_dirs)
    ]
    if len(datasets) == 1:
        return datasets[0]
    if weights is None:
        weights = [float(len(d)) for d in datasets]
    if len(weights) != len(datasets):
        raise DataError(f"{len(weights)} weights for {len(datasets)} datasets")
    return MixedDataset(list(zip(datasets, weights)), seed=seed)
