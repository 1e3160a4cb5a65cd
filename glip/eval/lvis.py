"""LVIS box detection evaluation: the ``lvis`` package's ``LVISEval`` (AP, APr / APc / APf) under the
Fixed-AP protocol that the GLIP and MDETR LVIS numbers use, or the standard protocol.

What the official GLIP LVIS evaluation does (README "LVIS Evaluation"; ``engine/inference.py``
``build_lvis_evaluator``; ``data/datasets/evaluation/lvis/lvis_eval.py`` ``LvisEvaluatorFixedAP``, taken
from MDETR, itself from Dave et al. "Evaluating Large-Vocabulary Object Detectors: The Devil is in the
Details", arXiv 2102.01066):

* prompts: the 1203 categories sorted by id, in chunks of 40 (``TEST.CHUNKED_EVALUATION 40``), one
  model call per chunk per image; each chunk's detections are NMS'd and capped at 300 per image
  (``MODEL.ATSS.DETECTIONS_PER_IMG 300``) on their own, then concatenated (up to 31 x 300 per image);
* boxes exported as xywh with ``w = x2 - x1`` (``convert_to_xywh``, no "+1", unlike COCO);
* **Fixed AP**: no per-image limit (``LVISResults(max_dets=-1)``, ``params.max_dets = -1``); instead, for
  each category the ``topk = 10000`` highest-scoring detections *across the whole dataset* are kept;
* then ``LVISEval(iou_type="bbox").run()``: AP, AP50, AP75, APs/m/l, APr/APc/APf.

The standard protocol (``fixed_ap=False``, official ``DATASETS.LVIS_USE_NORMAL_AP``) keeps the best 300
detections per image instead.

lvis 0.5.3 (the current release) uses ``np.float``, removed in NumPy 1.24: :func:`lvis_numpy_compat` puts
the alias back for the duration of a call.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glip.eval.coco import DetectionScore, _category_rows, evaluate_detection, precision_curves
from glip.eval.common import EvalError, EvalResult
from glip.eval.data import CocoDataset, load_coco_dataset, sort_key
from glip.eval.inference import Collector
from glip.eval.options import EvalOptions, EvalOptionsError

logger = logging.getLogger(__name__)

#: official ``TEST.CHUNKED_EVALUATION`` of the LVIS command.
LVIS_CHUNK_SIZE = 40
#: official ``MODEL.ATSS.DETECTIONS_PER_IMG`` of the LVIS command.
LVIS_DETECTIONS_PER_IMG = 300
#: ``LvisEvaluatorFixedAP(topk=10000)``: detections kept per category over the dataset.
LVIS_FIXED_AP_TOPK = 10000
LVIS_METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


@contextlib.contextmanager
def lvis_numpy_compat() -> Iterator[None]:
    """``np.float = float`` while the block runs, if NumPy lacks it (lvis 0.5.3 needs it)."""
    added = "float" not in np.__dict__
    if added:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if added:
            del np.float  # type: ignore[attr-defined]


def _lvis_classes() -> tuple[Any, Any, Any]:
    try:
        from lvis import LVIS, LVISEval, LVISResults
    except ImportError:
        raise ImportError(
            "LVIS evaluation needs the lvis package: pip install '.[eval]' (in the glip checkout)"
        ) from None
    return LVIS, LVISEval, LVISResults


def lvis_from_dict(data: Mapping[str, Any]) -> Any:
    """An ``lvis.LVIS`` ground truth from an in-memory dict (the package only reads paths)."""
    LVIS, _, _ = _lvis_classes()
    gt = LVIS.__new__(LVIS)
    gt.logger = logging.getLogger("lvis.lvis")
    gt.dataset = data
    gt._create_index()
    return gt


def lvis_results(gt: Any, results: list[dict[str, Any]], max_dets: int) -> Any:
    """``lvis.LVISResults(gt, results, max_dets)``, also for an empty list (the package indexes
    ``results[0]``)."""
    _, _, LVISResults = _lvis_classes()
    if results:
        return LVISResults(gt, results, max_dets=max_dets)
    empty = LVISResults.__new__(LVISResults)
    empty.logger = logging.getLogger("lvis.results")
    empty.dataset = copy.deepcopy(gt.dataset)
    empty.dataset["annotations"] = []
    empty._create_index()
    return empty


def fixed_ap_selection(
    results: Sequence[Mapping[str, Any]], topk: int = LVIS_FIXED_AP_TOPK
) -> list[dict[str, Any]]:
    """Per category, the ``topk`` best detections across the dataset (by decreasing score; ties keep
    their input order), categories in order of first appearance. Official ``LvisEvaluatorFixedAP``."""
    by_cat: dict[Any, list[dict[str, Any]]] = {}
    for det in results:
        by_cat.setdefault(det["category_id"], []).append(dict(det, bbox=list(det["bbox"])))
    selected: list[dict[str, Any]] = []
    for cat_dets in by_cat.values():
        selected.extend(sorted(cat_dets, key=lambda d: d["score"], reverse=True)[:topk])
    return selected


class LvisCollector(Collector):
    """Keeps only what the LVIS protocol can use, as records arrive (LVIS runs produce up to
    31 chunks x 300 detections per image).

    Fixed AP: per category the ``topk`` best detections; standard: each image's best ``max_dets``.
    Ordering (also across ranks): decreasing score, then image order, then rank within the image, so the
    selection does not depend on the number of processes. Records of ``example_ids`` are kept whole for the
    report. Rows: (score, image index, detection index, x1, y1, x2, y2), float64.
    """

    def __init__(
        self,
        image_ids: Sequence[Any],
        example_ids: set[Any],
        fixed_ap: bool = True,
        topk: int = LVIS_FIXED_AP_TOPK,
        max_dets: int = LVIS_DETECTIONS_PER_IMG,
    ) -> None:
        super().__init__()
        self.order = {image_id: index for index, image_id in enumerate(image_ids)}
        self.image_ids = list(image_ids)
        self.example_ids = example_ids
        self.fixed_ap = fixed_ap
        self.topk = topk
        self.max_dets = max_dets
        self.rows: dict[Any, list[np.ndarray]] = {}
        self.sizes: dict[Any, int] = {}
        self.examples: dict[Any, dict[str, Any]] = {}
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, record: dict[str, Any]) -> None:
        self.count += 1
        if record["id"] in self.example_ids:
            self.examples[record["id"]] = record
        scores = np.asarray(record["scores"], dtype=np.float64)
        if scores.size == 0:
            return
        boxes = np.asarray(record["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = list(record["labels"])
        keep = np.argsort(-scores, kind="stable")
        if not self.fixed_ap:
            keep = keep[: self.max_dets]  # LVISResults.limit_dets_per_image
        keep = np.sort(keep)
        rows = np.concatenate(
            [
                scores[keep, None],
                np.full((keep.size, 1), float(self.order[record["id"]])),
                keep[:, None].astype(np.float64),
                boxes[keep],
            ],
            axis=1,
        )
        by_label: dict[Any, list[int]] = {}
        for position, index in enumerate(keep.tolist()):
            by_label.setdefault(labels[index], []).append(position)
        for label, positions in by_label.items():
            self.rows.setdefault(label, []).append(rows[positions])
            self.sizes[label] = self.sizes.get(label, 0) + len(positions)
            if self.fixed_ap and self.sizes[label] > 2 * self.topk:
                self._prune(label)

    def _select(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
        order = np.lexsort((rows[:, 2], rows[:, 1], -rows[:, 0]))
        return rows[order[: self.topk] if self.fixed_ap else order]

    def _prune(self, label: Any) -> None:
        self.rows[label] = [self._select(self.rows[label])]
        self.sizes[label] = len(self.rows[label][0])

    def state(self) -> Any:
        selected = {label: self._select(parts) for label, parts in self.rows.items()}
        return {"rows": selected, "examples": self.examples}

    def merge(self, states: Sequence[Any]) -> tuple[list[dict[str, Any]], dict[Any, dict[str, Any]]]:
        """(COCO results, xywh with ``w = x2 - x1``, per category best first; example records)."""
        parts: dict[Any, list[np.ndarray]] = {}
        examples: dict[Any, dict[str, Any]] = {}
        for state in states:
            examples.update(state["examples"])
            for label, rows in state["rows"].items():
                parts.setdefault(label, []).append(rows)
        results: list[dict[str, Any]] = []
        for label in sorted(parts, key=sort_key):
            for row in self._select(parts[label]).tolist():
                score, image_index, _, x1, y1, x2, y2 = row
                results.append(
                    {
                        "image_id": self.image_ids[int(image_index)],
                        "category_id": label,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": score,
                    }
                )
        return results, examples


def score_lvis(
    dataset: CocoDataset | str | Path | Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    image_ids: Sequence[Any] | None = None,
    *,
    fixed_ap: bool = True,
    topk: int = LVIS_FIXED_AP_TOPK,
    max_dets: int = LVIS_DETECTIONS_PER_IMG,
) -> DetectionScore:
    """LVIS box AP of ``results`` (xywh COCO results) with ``lvis.LVISEval``.

    Args:
        dataset: LVIS ground truth (a :class:`CocoDataset` loaded with task "lvis", a path or a dict).
        results: detections (not modified).
        image_ids: evaluate these images only; default all.
        fixed_ap: Fixed AP (per-category top ``topk`` over the dataset, no per-image limit) as GLIP/MDETR;
            False: standard LVIS AP (best ``max_dets`` per image).

    Returns:
        :class:`DetectionScore` with ``LVIS_METRICS`` plus AR, ARs, ARm, ARl.
    """
    if not isinstance(dataset, CocoDataset):
        dataset = load_coco_dataset(dataset, "lvis")
    _, LVISEval, _ = _lvis_classes()
    gt = lvis_from_dict(copy.deepcopy(dataset.data))
    ids = sorted(image_ids if image_ids is not None else dataset.image_ids, key=sort_key)
    wanted = set(ids)
    kept = [r for r in results if r["image_id"] in wanted]
    if fixed_ap:
        dets = fixed_ap_selection(kept, topk)
        limit = -1
    else:
        dets = [dict(r, bbox=list(r["bbox"])) for r in kept]
        limit = max_dets
    with lvis_numpy_compat(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # lvis calls logger.warn
        evaluator = LVISEval(gt, lvis_results(gt, dets, limit), iou_type="bbox")
        evaluator.params.max_dets = limit
        evaluator.params.img_ids = ids
        evaluator.run()
    raw = evaluator.get_results()
    metrics: dict[str, Any] = {key: float(raw[key]) for key in LVIS_METRICS}
    for key, value in raw.items():
        if key.startswith("AR"):  # "AR@300" / "ARs@300" or "AR@-1" with fixed AP
            metrics[key.split("@")[0]] = float(value)
    metrics["num_images"] = len(ids)
    metrics["num_detections"] = len(dets)
    metrics["fixed_ap"] = bool(fixed_ap)
    precision = np.asarray(evaluator.eval["precision"])  # (T, R, K, A)
    iou_thrs = np.asarray(evaluator.params.iou_thrs)
    cat_ids = list(evaluator.params.cat_ids)
    frequency = {c["id"]: c["frequency"] for c in dataset.data["categories"]}
    rows = _category_rows(
        dataset, dets, ids, precision, cat_ids, iou_thrs, extra=lambda c: {"frequency": frequency[c]}
    )
    curves = precision_curves(precision, iou_thrs, np.asarray(evaluator.params.rec_thrs))
    return DetectionScore(metrics=metrics, per_category=rows, curves=curves)


def evaluate_lvis(
    model: Any,
    ann_file: str | Path | Mapping[str, Any],
    image_dir: str | Path,
    options: EvalOptions | None = None,
    *,
    fixed_ap: bool = True,
    topk: int = LVIS_FIXED_AP_TOPK,
    chunk_size: int | None = LVIS_CHUNK_SIZE,
) -> EvalResult:
    """Zero-shot LVIS box AP of a GLIP model with the official protocol (see the module docstring).

    ``image_dir``: the COCO root holding ``train2017/`` and ``val2017/`` (LVIS records name their image by
    ``coco_url``; a ``file_name`` is used when present). ``options``: how to run
    (:class:`~glip.eval.options.EvalOptions`; ``detections_per_img`` default ``LVIS_DETECTIONS_PER_IMG`` =
    300, also the standard protocol's per-image cap; ``backend`` unused, ``masks`` not supported).
    ``fixed_ap``: the Fixed AP protocol (else standard), keeping ``topk`` detections per category;
    ``chunk_size``: classes per prompt (official 40; None: as many as fit 256 tokens; -1: one prompt).
    """
    options = options if options is not None else EvalOptions()
    if options.masks:
        raise EvalOptionsError("EvalOptions(masks=True) is for COCO-format sets (evaluate_coco), not LVIS")
    _lvis_classes()  # an ImportError now rather than after the inference
    dataset = load_coco_dataset(ann_file, "lvis")
    if image_dir is None:
        raise EvalError("LVIS evaluation needs the image folder (the COCO root with train2017/ and val2017/)")

    max_dets = options.detections_per_img or LVIS_DETECTIONS_PER_IMG
    options = options.replace(detections_per_img=max_dets)

    def scorer(ds: CocoDataset, results: list[dict[str, Any]], ids: list[Any]) -> DetectionScore:
        return score_lvis(ds, results, ids, fixed_ap=fixed_ap, topk=topk, max_dets=max_dets)

    def collector(ids: list[Any], example_ids: set[Any]) -> LvisCollector:
        return LvisCollector(ids, example_ids, fixed_ap=fixed_ap, topk=topk, max_dets=max_dets)

    return evaluate_detection(
        "lvis",
        model,
        dataset,
        image_dir,
        scorer,
        options,
        plus_one=False,
        chunk_size=chunk_size,
        extra_settings={"protocol": "fixed AP" if fixed_ap else "standard", "fixed_ap_topk": topk},
        collector_factory=collector,
    )
