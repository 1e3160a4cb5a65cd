"""Few-shot subsets of a COCO-format detection dataset (ODinW few-shot protocol of official GLIP).

Official ``COCODataset(few_shot=k, shuffle_seed=s)`` (maskrcnn_benchmark/data/datasets/coco.py): take the
images that have a valid annotation, sorted by id; shuffle them with ``random.Random(s).shuffle`` (only when
``s != 0``); walk them in that order and keep an image when at least one of its categories still needs
images (each category starts with a quota of k); a kept image uses one unit of the quota of *every* category
it contains. Every category thus ends up with at least ``min(k, number of images containing it)`` images,
frequent ones with more.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from glip.data.coco import CocoGroundingDataset
from glip.data.reading import id_sort_key, load_json
from glip.data.types import DataError

__all__ = ["few_shot_dataset", "few_shot_subset"]


def few_shot_subset(coco: Mapping[str, Any], shots: int, seed: int = 0) -> dict[str, Any]:
    """A copy of a COCO dict restricted to a k-shot subset of its images.

    Protocol (official GLIP / ODinW): candidate images are those with at least one non-crowd box with
    ``w > 1`` and ``h > 1`` (official ``has_valid_annotation``); they are sorted by id and, when ``seed != 0``,
    shuffled with ``random.Random(seed).shuffle`` (``seed == 0`` keeps the sorted order, as official
    ``SHUFFLE_SEED 0``); walking that order, an image is kept when one of the categories of its non-crowd
    annotations has been kept fewer than ``shots`` times, and then counts for every category it contains.
    Crowd annotations do not count as a shot (official: they do; a deviation for datasets with crowd boxes,
    ODinW has none).

    Returns:
        A new dict: ``images`` = the kept images (in the input order), ``annotations`` = all annotations of
        the kept images (crowd ones too), every other key (``categories``, ``info``...) copied.
        Same input, shots and seed -> the same subset.
    """
    if shots <= 0:
        raise ValueError(f"shots must be positive, got {shots}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DataError(f"few_shot_subset: the COCO dict has no {key!r} list")
    categories = [cat.get("id") for cat in coco["categories"] if isinstance(cat, dict)]
    image_ids = [image.get("id") for image in coco["images"] if isinstance(image, dict)]
    known = set(image_ids)
    cats_of: dict[Any, set[Any]] = {}
    valid: set[Any] = set()
    for ann in coco["annotations"]:
        if not isinstance(ann, dict) or ann.get("image_id") not in known or ann.get("iscrowd", 0):
            continue
        image_id = ann["image_id"]
        cats_of.setdefault(image_id, set()).add(ann.get("category_id"))
        bbox = ann.get("bbox")
        if isinstance(bbox, list | tuple) and len(bbox) == 4 and bbox[2] > 1 and bbox[3] > 1:
            valid.add(image_id)

    order = sorted((i for i in set(image_ids) if i in valid), key=id_sort_key)
    if seed != 0:
        random.Random(seed).shuffle(order)
    quota = {cid: shots for cid in categories}
    chosen: set[Any] = set()
    for image_id in order:
        cats = cats_of.get(image_id, set())
        if any(quota.get(c, 0) > 0 for c in cats):
            chosen.add(image_id)
            for c in cats:
                if c in quota:
                    quota[c] -= 1

    out = {key: copy.deepcopy(value) for key, value in coco.items() if key not in ("images", "annotations")}
    out["images"] = [
        copy.deepcopy(im) for im in coco["images"] if isinstance(im, dict) and im.get("id") in chosen
    ]
    out["annotations"] = [
        copy.deepcopy(ann)
        for ann in coco["annotations"]
        if isinstance(ann, dict) and ann.get("image_id") in chosen
    ]
    return out


def few_shot_dataset(
    ann_file: str | Path | Mapping[str, Any],
    image_dir: str | Path | None,
    transform: Any = None,
    shots: int = 1,
    seed: int = 0,
    **dataset_kwargs: Any,
) -> CocoGroundingDataset:
    """:class:`CocoGroundingDataset` on :func:`few_shot_subset` of ``ann_file`` (``seed`` selects the subset
    and also seeds the dataset's per-sample randomness). ``dataset_kwargs`` go to the dataset."""
    subset = few_shot_subset(load_json(ann_file), shots, seed)
    return CocoGroundingDataset(subset, image_dir, transform, seed=seed, **dataset_kwargs)
