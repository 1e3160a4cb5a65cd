"""Reading and checking evaluation inputs: COCO / LVIS ground truth and detection predictions.

Every problem raises :class:`~glip.eval.common.EvalError` naming the file and the record, before any
model runs: wrong or missing keys, unknown image / category ids, boxes with negative size, non-finite
numbers, duplicate ids.

Predictions come in two formats:

* COCO results: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]`` (used as is);
* ours, the ``predictions.json`` of ``glip detect``: ``[{"file", "width", "height", "detections":
  [{"box_xyxy", "score", "label", "phrase"}]}]``. Images are matched by file name, categories by
  ``phrase`` (the class name given to ``glip detect``), boxes converted to xywh with the official
  convention of the task (COCO: ``w = x2 - x1 + 1``; LVIS: ``w = x2 - x1``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glip.eval.common import EvalError, describe_image

logger = logging.getLogger(__name__)

LVIS_FREQUENCIES = ("r", "c", "f")


def read_json(path: str | Path, what: str = "file") -> Any:
    """JSON content of ``path``; :class:`EvalError` when missing or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"{what} not found: {path}")
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvalError(f"{path}: not a valid JSON file: {exc}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_box(box: Any, where: str, kind: str) -> list[float]:
    """4 finite numbers with non-negative size. ``kind``: "xywh" or "xyxy"."""
    if not isinstance(box, list | tuple) or len(box) != 4 or not all(_is_number(v) for v in box):
        raise EvalError(f"{where}: box must be 4 finite numbers [{', '.join(kind)}], got {box!r}")
    values = [float(v) for v in box]
    if kind == "xywh":
        width, height = values[2], values[3]
    else:
        width, height = values[2] - values[0], values[3] - values[1]
    if width < 0 or height < 0:
        raise EvalError(f"{where}: box {box!r} ({kind}) has negative size ({width:g} x {height:g})")
    return values


def _check_id(value: Any, where: str, key: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise EvalError(f"{where}: '{key}' must be an integer (or a string), got {value!r}")
    return value


def _require(record: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(record, dict):
        raise EvalError(f"{where}: expected an object with keys {list(keys)}, got {type(record).__name__}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise EvalError(f"{where}: missing key(s) {missing} (has {sorted(record)})")


# ---------------------------------------------------------------------------------------- ground truth


@dataclass
class CocoDataset:
    """A checked COCO-format (or LVIS) ground truth.

    data:       the annotation dict, completed where pycocotools needs it (``area`` = w*h and
                ``iscrowd`` = 0 when absent, ``id`` when absent).
    path:       where it was read from (for messages); "<dict>" for an in-memory dict.
    categories: id -> name, in file order; ``category_ids`` sorted.
    images:     id -> image record; ``image_ids`` sorted (the evaluation order).
    """

    data: dict[str, Any]
    path: str
    task: str = "coco"
    categories: dict[Any, str] = field(default_factory=dict)
    images: dict[Any, dict[str, Any]] = field(default_factory=dict)
    _positions: dict[Any, int] = field(default_factory=dict, repr=False)

    @property
    def category_ids(self) -> list[Any]:
        return sorted(self.categories, key=sort_key)

    @property
    def image_ids(self) -> list[Any]:
        return sorted(self.images, key=sort_key)

    def image_index(self, image_id: Any) -> int:
        """Position of the image in the file's ``images`` list."""
        if len(self._positions) != len(self.data["images"]):
            self._positions = {record["id"]: index for index, record in enumerate(self.data["images"])}
        return self._positions[image_id]

    def where_image(self, image_id: Any) -> str:
        return describe_image(self.path, self.image_index(image_id), self.images[image_id])


def sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int) else (1, str(value))


def load_coco_dataset(source: str | Path | Mapping[str, Any], task: str = "coco") -> CocoDataset:
    """Read and check a COCO-format annotation file (``task="lvis"``: also the LVIS fields).

    Args:
        source: a path or an already loaded dict (copied, never modified).
        task: "coco" (also ODinW) or "lvis" (images need ``neg_category_ids`` and
            ``not_exhaustive_category_ids``, categories a ``frequency`` of r/c/f).

    Raises:
        EvalError: naming the file and the first bad record.
    """
    if isinstance(source, Mapping):
        data: Any = copy.deepcopy(dict(source))
        path = "<dict>"
    else:
        path = str(source)
        data = read_json(source, "annotation file")
    if not isinstance(data, dict):
        raise EvalError(
            f"{path}: a COCO-format annotation file is an object with 'images', 'annotations' and "
            f"'categories'; got a {type(data).__name__}"
            + (" (is this a predictions file? pass it with --predictions)" if isinstance(data, list) else "")
        )
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise EvalError(f"{path}: missing the '{key}' list (has {sorted(data)})")
        if not isinstance(data[key], list):
            raise EvalError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    dataset = CocoDataset(data=data, path=path, task=task)

    for index, cat in enumerate(data["categories"]):
        where = f"{path}: categories[{index}]"
        _require(cat, ("id", "name"), where)
        cat_id = _check_id(cat["id"], where, "id")
        if not isinstance(cat["name"], str):
            raise EvalError(f"{where} (id {cat_id!r}): 'name' must be a string, got {cat['name']!r}")
        if cat_id in dataset.categories:
            raise EvalError(f"{where}: duplicate category id {cat_id!r}")
        if task == "lvis" and cat.get("frequency") not in LVIS_FREQUENCIES:
            raise EvalError(
                f"{where} (id {cat_id!r}, {cat['name']!r}): LVIS needs 'frequency' r/c/f, "
                f"got {cat.get('frequency')!r}"
            )
        dataset.categories[cat_id] = cat["name"]
    if not dataset.categories:
        raise EvalError(f"{path}: 'categories' is empty")

    for index, image in enumerate(data["images"]):
        where = f"{path}: images[{index}]"
        _require(image, ("id",), where)
        image_id = _check_id(image["id"], where, "id")
        where = describe_image(path, index, image)
        if image_id in dataset.images:
            raise EvalError(f"{where}: duplicate image id {image_id!r}")
        for key in ("width", "height"):
            if key in image:
                value = image[key]
                if isinstance(value, str) and value.strip().isdigit():  # MDETR's Flickr files
                    image[key] = value = int(value)
                if not _is_number(value) or value <= 0:
                    raise EvalError(f"{where}: '{key}' must be a positive number, got {value!r}")
        if not (image.get("file_name") or image.get("coco_url")):
            raise EvalError(f"{where}: has neither 'file_name' nor 'coco_url'")
        if task == "lvis":
            for key in ("neg_category_ids", "not_exhaustive_category_ids"):
                if not isinstance(image.get(key), list):
                    raise EvalError(f"{where}: LVIS needs a '{key}' list, got {image.get(key)!r}")
                unknown = [c for c in image[key] if c not in dataset.categories]
                if unknown:
                    raise EvalError(f"{where}: '{key}' has unknown category ids {unknown[:5]}")
        dataset.images[image_id] = image

    used_ids = {a["id"] for a in data["annotations"] if isinstance(a, dict) and "id" in a}
    next_id = max([i for i in used_ids if isinstance(i, int)], default=0) + 1
    seen: set[Any] = set()
    for index, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{index}]"
        _require(ann, ("image_id", "category_id", "bbox"), where)
        if "id" in ann:
            ann_id = _check_id(ann["id"], where, "id")
            if ann_id in seen:
                raise EvalError(f"{where}: duplicate annotation id {ann_id!r}")
        else:
            ann["id"] = ann_id = next_id
            next_id += 1
        seen.add(ann_id)
        where = f"{where} (id {ann_id!r})"
        if ann["image_id"] not in dataset.images:
            raise EvalError(f"{where}: unknown image_id {ann['image_id']!r} (not in 'images')")
        if ann["category_id"] not in dataset.categories:
            raise EvalError(f"{where}: unknown category_id {ann['category_id']!r} (not in 'categories')")
        box = _check_box(ann["bbox"], where, "xywh")
        if "area" not in ann:
            ann["area"] = box[2] * box[3]
        elif not _is_number(ann["area"]) or ann["area"] < 0:
            raise EvalError(f"{where}: 'area' must be a non-negative number, got {ann['area']!r}")
        if task != "lvis":
            crowd = ann.setdefault("iscrowd", 0)
            if crowd not in (0, 1, True, False):
                raise EvalError(f"{where}: 'iscrowd' must be 0 or 1, got {crowd!r}")
    return dataset


def apply_category_override(dataset: CocoDataset, override: Any, where: str) -> None:
    """Rename categories (official ``DATASETS.OVERRIDE_CATEGORY``: a list of ``{"id", "name"}``, or its
    JSON string, or a ``{id: name}`` mapping). Ids must be categories of the dataset."""
    if isinstance(override, str):
        try:
            override = json.loads(override)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{where}: override_category is not valid JSON: {exc}") from None
    if isinstance(override, Mapping):
        items = [(_maybe_int(k), v) for k, v in override.items()]
    elif isinstance(override, list):
        items = []
        for index, entry in enumerate(override):
            _require(entry, ("id", "name"), f"{where}: override_category[{index}]")
            items.append((entry["id"], entry["name"]))
    else:
        raise EvalError(f"{where}: override_category must be a list of {{id, name}} or a mapping")
    for cat_id, name in items:
        if cat_id not in dataset.categories:
            raise EvalError(
                f"{where}: override_category names id {cat_id!r}, not a category of {dataset.path} "
                f"(ids {dataset.category_ids[:10]})"
            )
        if not isinstance(name, str):
            raise EvalError(f"{where}: override_category name of id {cat_id!r} must be a string")
        dataset.categories[cat_id] = name
        for cat in dataset.data["categories"]:
            if cat["id"] == cat_id:
                cat["name"] = name


def _maybe_int(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else value


# ------------------------------------------------------------------------------------------ predictions


def xyxy_to_xywh(box: Sequence[float], plus_one: bool) -> list[float]:
    """``[x1, y1, x2, y2] -> [x, y, w, h]``; ``plus_one``: the official legacy ``w = x2 - x1 + 1``
    (COCO / ODinW export, ``BoxList.convert("xywh")``); without it ``w = x2 - x1`` (official LVIS export)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    extra = 1.0 if plus_one else 0.0
    return [x1, y1, x2 - x1 + extra, y2 - y1 + extra]


def records_to_coco_results(
    records: Mapping[Any, Mapping[str, Any]], image_ids: Sequence[Any], plus_one: bool
) -> list[dict[str, Any]]:
    """Our per-image records ``{"boxes" xyxy, "scores", "labels" = category ids}`` -> COCO results,
    in ``image_ids`` order (then as stored: by decreasing score)."""
    results = []
    for image_id in image_ids:
        record = records.get(image_id)
        if record is None:
            continue
        for index, (box, score, label) in enumerate(zip(record["boxes"], record["scores"], record["labels"])):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": xyxy_to_xywh(box, plus_one),
                    "score": float(score),
                }
            )
            if "segmentation" in record:  # GLIPv2 masks (COCO RLE), evaluate_coco(masks=True)
                results[-1]["segmentation"] = record["segmentation"][index]
    return results


def _name_key(name: str) -> str:
    from glip.text.prompts import clean_name

    return " ".join(clean_name(name).lower().split())


def load_detection_predictions(
    source: str | Path | list[Any], dataset: CocoDataset, plus_one: bool
) -> list[dict[str, Any]]:
    """Read a predictions file (COCO results or ``glip detect``'s predictions.json) as checked COCO
    results for ``dataset``.

    Args:
        source: a path, or the loaded list.
        dataset: the ground truth (image ids, file names and category names to match).
        plus_one: xyxy -> xywh convention for ``glip detect`` records (see :func:`xyxy_to_xywh`).

    Returns:
        COCO results ``[{"image_id", "category_id", "bbox", "score"}]``.
    """
    path = "<list>" if isinstance(source, list) else str(source)
    data = source if isinstance(source, list) else read_json(source, "predictions file")
    if isinstance(data, dict):
        hint = " (this looks like an annotation file)" if "annotations" in data else ""
        raise EvalError(f"{path}: a predictions file is a list of records, got an object{hint}")
    if not isinstance(data, list):
        raise EvalError(f"{path}: a predictions file is a list of records, got {type(data).__name__}")
    if not data:
        return []
    first = data[0]
    if isinstance(first, dict) and "detections" in first:
        return _ours_to_coco(data, path, dataset, plus_one)
    if isinstance(first, dict) and "bbox" in first:
        return _check_coco_results(data, path, dataset)
    raise EvalError(
        f"{path}: record 0 is neither a COCO result (image_id, category_id, bbox, score) nor a "
        f"'glip detect' record (file, width, height, detections); got {first!r:.200}"
    )


def _check_coco_results(data: list[Any], path: str, dataset: CocoDataset) -> list[dict[str, Any]]:
    results = []
    for index, det in enumerate(data):
        where = f"{path}: record {index}"
        _require(det, ("image_id", "category_id", "bbox", "score"), where)
        where = f"{where} (image_id {det['image_id']!r})"
        if det["image_id"] not in dataset.images:
            raise EvalError(f"{where}: unknown image_id, not in {dataset.path}")
        if det["category_id"] not in dataset.categories:
            raise EvalError(f"{where}: unknown category_id {det['category_id']!r}, not in {dataset.path}")
        box = _check_box(det["bbox"], where, "xywh")
        if not _is_number(det["score"]):
            raise EvalError(f"{where}: 'score' must be a finite number, got {det['score']!r}")
        results.append(
            {
                "image_id": det["image_id"],
                "category_id": det["category_id"],
                "bbox": box,
                "score": float(det["score"]),
            }
        )
        if isinstance(det.get("segmentation"), dict):  # a mask (COCO RLE): kept for mask AP
            results[-1]["segmentation"] = det["segmentation"]
    return results


def _ours_to_coco(data: list[Any], path: str, dataset: CocoDataset, plus_one: bool) -> list[dict[str, Any]]:
    by_name: dict[str, list[Any]] = {}
    by_base: dict[str, list[Any]] = {}
    for image_id, image in dataset.images.items():
        for name in {image.get("file_name"), _url_name(image.get("coco_url"))} - {None, ""}:
            by_name.setdefault(Path(name).as_posix(), []).append(image_id)
            by_base.setdefault(Path(name).name, []).append(image_id)
    sorted_ids = dataset.category_ids
    exact: dict[str, Any] = {}
    cleaned: dict[str, list[Any]] = {}
    for cat_id in sorted_ids:
        exact.setdefault(dataset.categories[cat_id], cat_id)
        cleaned.setdefault(_name_key(dataset.categories[cat_id]), []).append(cat_id)

    results = []
    seen_images: dict[Any, int] = {}
    for index, record in enumerate(data):
        where = f"{path}: record {index}"
        _require(record, ("file", "detections"), where)
        file = record["file"]
        where = f"{where} (file {file!r})"
        if not isinstance(file, str) or not file:
            raise EvalError(f"{where}: 'file' must be the image path")
        image_id = _match_file(file, by_name, by_base, where, dataset.path)
        if image_id in seen_images:
            raise EvalError(f"{where}: same image as record {seen_images[image_id]}")
        seen_images[image_id] = index
        image = dataset.images[image_id]
        scale_x = scale_y = 1.0
        if _is_number(record.get("width")) and _is_number(record.get("height")) and "width" in image:
            scale_x = float(image["width"]) / float(record["width"])
            scale_y = float(image["height"]) / float(record["height"])
            if abs(scale_x - 1) > 1e-9 or abs(scale_y - 1) > 1e-9:
                logger.warning(
                    "%s: %sx%s pixels but the annotation says %sx%s: boxes rescaled",
                    where,
                    record["width"],
                    record["height"],
                    image["width"],
                    image["height"],
                )
        if not isinstance(record["detections"], list):
            raise EvalError(f"{where}: 'detections' must be a list")
        for j, det in enumerate(record["detections"]):
            det_where = f"{where} detection {j}"
            _require(det, ("box_xyxy", "score"), det_where)
            box = _check_box(det["box_xyxy"], det_where, "xyxy")
            if not _is_number(det["score"]):
                raise EvalError(f"{det_where}: 'score' must be a finite number, got {det['score']!r}")
            if "phrase" in det and det["phrase"] is not None:
                phrase = str(det["phrase"])
                matches = [exact[phrase]] if phrase in exact else cleaned.get(_name_key(phrase), [])
                if len(matches) > 1:
                    raise EvalError(
                        f"{det_where}: phrase {phrase!r} matches categories {matches} once cleaned; "
                        "give the exact category name"
                    )
                cat_id = matches[0] if matches else None
                if cat_id is None:
                    known = ", ".join(repr(dataset.categories[c]) for c in sorted_ids[:8])
                    raise EvalError(
                        f"{det_where}: phrase {det['phrase']!r} is no category of {dataset.path} "
                        f"({known}{', ...' if len(sorted_ids) > 8 else ''})"
                    )
            elif isinstance(det.get("label"), int) and 0 <= det["label"] < len(sorted_ids):
                cat_id = sorted_ids[det["label"]]  # label = index into the categories sorted by id
            else:
                raise EvalError(f"{det_where}: needs a 'phrase' (category name) to find its category")
            box = [box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y]
            results.append(
                {
                    "image_id": image_id,
                    "category_id": cat_id,
                    "bbox": xyxy_to_xywh(box, plus_one),
                    "score": float(det["score"]),
                }
            )
            segmentation = det.get("segmentation")
            if isinstance(segmentation, dict):  # glip detect --masks: a COCO RLE in the record's pixels
                size = segmentation.get("size")
                expected = [image.get("height"), image.get("width")]
                if "height" in image and size != expected:
                    raise EvalError(
                        f"{det_where}: its mask is {size} (height, width) but the annotation's image is {expected}"
                    )
                results[-1]["segmentation"] = segmentation
    return results


def _url_name(url: Any) -> str | None:
    if not isinstance(url, str) or not url:
        return None
    parts = [p for p in url.replace("\\", "/").split("/") if p]
    return "/".join(parts[-2:]) if len(parts) >= 2 else (parts[-1] if parts else None)


def _match_file(
    file: str, by_name: dict[str, list[Any]], by_base: dict[str, list[Any]], where: str, ann: str
) -> Any:
    posix = Path(file).as_posix()
    parts = posix.split("/")
    for start in range(len(parts)):  # the longest trailing part of the path that is a file_name
        ids = by_name.get("/".join(parts[start:]))
        if ids and len(ids) == 1:
            return ids[0]
    ids = by_base.get(parts[-1])
    if ids and len(ids) == 1:
        return ids[0]
    if ids:
        raise EvalError(f"{where}: matches {len(ids)} images of {ann} by name; use unique file names")
    raise EvalError(f"{where}: matches no image of {ann} (by file_name)")
