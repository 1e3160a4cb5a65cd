"""Shared pieces of the evaluation package: the error type, the result type, distributed helpers, image
paths and image loading.

Nothing here imports pycocotools / lvis / matplotlib: those are imported where they are used, so
``import glip.eval`` works without the ``eval`` extra.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("coco", "lvis", "odinw", "flickr")


class EvalError(ValueError):
    """Bad evaluation input (annotation file, predictions file, suite file, image folder).

    The message names the file and the record (``instances.json: annotations[12] (id 40): ...``).
    """


@dataclass
class EvalResult:
    """What an evaluation returns.

    task:         "coco", "lvis", "odinw" or "flickr".
    metrics:      flat ``{name: value}``; floats are the headline numbers as fractions (pycocotools /
                  lvis conventions: -1.0 where undefined, e.g. APl without large objects); a few ints
                  (``num_images``...) may be present.
    per_category: one row per category (detection) or per dataset (ODinW): ``{"id", "name", "AP", ...}``.
    settings:     how the numbers were produced (model, files, prompts, thresholds, protocol).
    details:      task specific extras kept in metrics.json (e.g. each ODinW dataset's metrics).
    curves:       plotting data (precision arrays), kept on rank 0 only and not written to metrics.json.
    files:        report files written, ``{kind: path}``.
    """

    task: str
    metrics: dict[str, Any]
    per_category: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The metrics.json content (``curves`` left out; NaN/inf written as null)."""
        return _json_safe(
            {
                "task": self.task,
                "metrics": self.metrics,
                "per_category": self.per_category,
                "settings": self.settings,
                "details": self.details,
            }
        )


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy / torch scalars
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class RankInfo:
    """This process's place in the (optional) process group."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_info() -> RankInfo:
    """Rank and world size of the initialised process group (0 / 1 without one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return RankInfo(dist.get_rank(), dist.get_world_size())
    return RankInfo()


def barrier() -> None:
    from glip.engine.distributed import barrier as _barrier

    _barrier()


def gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj``, on every rank (``[obj]`` without a process group)."""
    from glip.engine.distributed import all_gather_objects

    return all_gather_objects(obj)


def broadcast_from_main(obj: object) -> object:
    """Rank 0's ``obj`` on every rank (other ranks pass anything, e.g. None)."""
    return gather_objects(obj)[0]


def run_on_main(compute: Callable[[], EvalResult]) -> EvalResult:
    """``compute()`` on rank 0 only; every rank returns its result (the others without ``curves``).

    A failure on rank 0 is raised on every rank (an :class:`EvalError` as such), so no rank waits forever.
    """
    info = rank_info()
    if info.world_size == 1:
        return compute()
    result: EvalResult | None = None
    failure: tuple[bool, str] | None = None
    if info.is_main:
        try:
            result = compute()
        except Exception as exc:
            failure = (isinstance(exc, EvalError), f"{type(exc).__name__}: {exc}")
            broadcast_from_main((None, failure))
            raise
    shared = None if result is None else dataclasses.replace(result, curves=None, files=dict(result.files))
    received, failure = broadcast_from_main((shared, failure))  # type: ignore[misc]
    if failure is not None:
        is_eval_error, message = failure
        raise (EvalError if is_eval_error else RuntimeError)(f"on rank 0: {message}")
    if result is not None:
        return result
    assert isinstance(received, EvalResult)
    return received


# --------------------------------------------------------------------------------------------- images


def describe_image(ann_file: str | Path, index: int, record: dict[str, Any]) -> str:
    """``"instances.json: images[3] (id 17, 'a.jpg')"`` for messages."""
    name = record.get("file_name") or record.get("coco_url") or ""
    return f"{ann_file}: images[{index}] (id {record.get('id')!r}{', ' + repr(name) if name else ''})"


def image_path_candidates(image_dir: Path, record: dict[str, Any]) -> list[Path]:
    """Where the image of an annotation ``images`` record may be, most specific first.

    ``file_name`` under ``image_dir`` (also its base name); for LVIS files without ``file_name``, the
    last two parts of ``coco_url`` ("val2017/000000397133.jpg": ``image_dir`` = the COCO root) and then
    its base name (``image_dir`` = the split folder).
    """
    candidates: list[Path] = []
    name = record.get("file_name")
    if isinstance(name, str) and name:
        candidates.append(image_dir / name)
        candidates.append(image_dir / Path(name).name)
    url = record.get("coco_url") or record.get("flickr_url")
    if isinstance(url, str) and url:
        parts = [p for p in re.split(r"[/\\]", url) if p]
        if len(parts) >= 2:
            candidates.append(image_dir / parts[-2] / parts[-1])
        if parts:
            candidates.append(image_dir / parts[-1])
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def resolve_image_path(image_dir: Path, record: dict[str, Any], where: str) -> Path:
    """The existing file of an ``images`` record; :class:`EvalError` naming it and the tried paths."""
    candidates = image_path_candidates(image_dir, record)
    if not candidates:
        raise EvalError(f"{where}: has neither 'file_name' nor 'coco_url': cannot find its image")
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise EvalError(f"{where}: image not found (tried {tried})")


def load_eval_image(path: Path, where: str, max_pixels: int | None = None) -> Any:
    """The image of an evaluation record, decoded as ``glip detect`` decodes it (:func:`glip.images.load_image`:
    EXIF orientation applied, alpha composited on white), so a dataset is scored in the frame detect shows.

    ``max_pixels``: None (default) reads any size (evaluation images are the dataset's own). Unreadable
    files raise :class:`EvalError` naming the record and the file.
    """
    from glip.images import ImageError, load_image

    try:
        return load_image(path, max_pixels=max_pixels)
    except ImageError as exc:
        raise EvalError(f"{where}: cannot read image {path}: {exc}") from None
