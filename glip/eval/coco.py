"""COCO-format box detection evaluation (COCO, ODinW datasets, any custom COCO-format set).

Protocol of the official GLIP evaluation (``tools/test_grounding_net.py ... TEST.EVAL_TASK detection``):

* one class-list prompt from the annotation file's categories sorted by id (cleaned names joined with
  ". "), split into several prompts only when it does not fit 256 tokens (or with ``chunk_size``);
* the model's own post-processing (pre-NMS threshold 0.05, top 1000 per level, class-aware NMS 0.6,
  100 detections per image; each prompt chunk separately, then concatenated);
* boxes rescaled to the annotation's width/height and exported as xywh with the legacy
  ``w = x2 - x1 + 1`` (``BoxList.convert("xywh")``);
* ``pycocotools`` ``COCOeval(iouType="bbox")`` with its default parameters (maxDets 1/10/100).

``backend="faster-coco-eval"`` scores with faster-coco-eval instead (identical numbers, faster on big sets).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glip.eval.common import EvalError, EvalResult, rank_info, resolve_image_path, run_on_main
from glip.eval.data import (
    CocoDataset,
    apply_category_override,
    load_coco_dataset,
    records_to_coco_results,
    sort_key,
)
from glip.eval.inference import (
    Collector,
    WorkItem,
    as_predictor,
    detection_prompts,
    file_digest,
    predict_images,
    run_inference,
    weights_checksum,
)
from glip.eval.options import BACKENDS, EvalOptions, EvalOptionsError
from glip.fileio import atomic_write_text

logger = logging.getLogger(__name__)

#: pycocotools ``COCOeval.stats`` order.
COCO_METRICS: tuple[str, ...] = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
#: official COCO cap on detections per image (``MODEL.ATSS.DETECTIONS_PER_IMG 100``, COCOeval maxDets 100).
COCO_DETECTIONS_PER_IMG = 100


@dataclass
class DetectionScore:
    """Scores of a set of detections.

    metrics: headline numbers (fractions, -1 where undefined); per_category: one row per category;
    curves: ``{"iou_thrs": (T,), "rec_thrs": (R,), "precision": (T, R) mean over categories,
    "ap_per_category": {id: AP}}`` for the plots.
    """

    metrics: dict[str, Any]
    per_category: list[dict[str, Any]]
    curves: dict[str, Any]


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def _category_rows(
    dataset: CocoDataset,
    results: Sequence[Mapping[str, Any]],
    image_ids: Sequence[Any],
    precision: np.ndarray,
    cat_ids: Sequence[Any],
    iou_thrs: np.ndarray,
    extra: Callable[[Any], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Per-category AP / AP50 / AP75 from a (T, R, K, A[, M]) precision array (area "all", last maxDets)."""
    if precision.ndim == 5:
        precision = precision[..., -1]
    evaluated = set(image_ids)
    num_gt: dict[Any, int] = {}
    for ann in dataset.data["annotations"]:
        if ann["image_id"] in evaluated and not ann.get("iscrowd", 0) and not ann.get("ignore", 0):
            num_gt[ann["category_id"]] = num_gt.get(ann["category_id"], 0) + 1
    num_dets: dict[Any, int] = {}
    for det in results:
        if det["image_id"] in evaluated:
            num_dets[det["category_id"]] = num_dets.get(det["category_id"], 0) + 1
    t50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
    t75 = int(np.argmin(np.abs(iou_thrs - 0.75)))
    rows = []
    for k, cat_id in enumerate(cat_ids):
        row = {
            "id": cat_id,
            "name": dataset.categories[cat_id],
            "num_gt": num_gt.get(cat_id, 0),
            "num_detections": num_dets.get(cat_id, 0),
            "AP": _mean_valid(precision[:, :, k, 0]),
            "AP50": _mean_valid(precision[t50, :, k, 0]),
            "AP75": _mean_valid(precision[t75, :, k, 0]),
        }
        if extra is not None:
            row.update(extra(cat_id))
        rows.append(row)
    return rows


def precision_curves(precision: np.ndarray, iou_thrs: np.ndarray, rec_thrs: np.ndarray) -> dict[str, Any]:
    """Mean precision over categories at each recall threshold, per IoU threshold (area "all", last
    maxDets): ``{"iou_thrs": [T], "rec_thrs": [R], "precision": [T][R]}`` (NaN where no category counts)."""
    if precision.ndim == 5:
        precision = precision[..., -1]
    per = precision[:, :, :, 0]  # (T, R, K)
    valid = per > -1
    counts = valid.sum(axis=2)
    sums = np.where(valid, per, 0.0).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return {"iou_thrs": iou_thrs.tolist(), "rec_thrs": rec_thrs.tolist(), "precision": mean.tolist()}


def check_backend(backend: str) -> None:
    """Import the scorer now (an ImportError before hours of inference, not after)."""
    try:
        if backend == "pycocotools":
            import pycocotools.cocoeval  # noqa: F401
        elif backend == "faster-coco-eval":
            import faster_coco_eval  # noqa: F401
        else:
            raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    except ImportError:
        package = "pycocotools" if backend == "pycocotools" else "faster-coco-eval"
        raise ImportError(
            f"COCO evaluation needs {package}: pip install '.[eval]' (in the glip checkout)"
        ) from None


def score_coco(
    dataset: CocoDataset | str | Path | Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    image_ids: Sequence[Any] | None = None,
    backend: str = "pycocotools",
    iou_type: str = "bbox",
) -> DetectionScore:
    """COCO box AP of ``results`` (COCO results, xywh) against ``dataset``; ``iou_type="segm"``: mask AP of
    their ``segmentation`` (COCO RLE) against the ground truth's ``segmentation``.

    Args:
        dataset: ground truth (a :class:`CocoDataset`, a path or a dict).
        results: ``[{"image_id", "category_id", "bbox", "score"}]`` (not modified).
        image_ids: evaluate these images only (``params.imgIds``); default all.
        backend: "pycocotools" or "faster-coco-eval" (same numbers).
        iou_type: "bbox" (the ``bbox`` of each result is scored) or "segm" (its ``segmentation``; the
            ground truth needs one per annotation, polygons or RLE).

    Returns:
        :class:`DetectionScore` with ``COCO_METRICS`` (= ``COCOeval.stats``), per-category AP and curves.
    """
    if not isinstance(dataset, CocoDataset):
        dataset = load_coco_dataset(dataset, "coco")
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    gt_dict = copy.deepcopy(dataset.data)
    if iou_type == "bbox":
        # (loadRes takes the bbox branch and would replace a result's segmentation by its box anyway)
        dets = [
            {k: v for k, v in dict(r, bbox=list(r["bbox"])).items() if k != "segmentation"} for r in results
        ]
    else:
        _check_segm(gt_dict, results, dataset.path)
        # without "bbox", loadRes takes the segmentation branch (area and box from the mask)
        dets = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    ids = sorted(image_ids if image_ids is not None else dataset.image_ids, key=sort_key)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        if backend == "pycocotools":
            try:
                from pycocotools.coco import COCO
                from pycocotools.cocoeval import COCOeval
            except ImportError:
                raise ImportError(
                    "COCO evaluation needs pycocotools: pip install '.[eval]' (in the glip checkout)"
                ) from None
            gt = COCO()
            gt.dataset = gt_dict
            gt.createIndex()
            dt = gt.loadRes(dets) if dets else COCO()  # official: an empty COCO() without detections
            evaluator = COCOeval(gt, dt, iou_type)
        elif backend == "faster-coco-eval":
            try:
                from faster_coco_eval import COCO as FasterCOCO
                from faster_coco_eval import COCOeval_faster
            except ImportError:
                raise ImportError("backend 'faster-coco-eval' needs: pip install faster-coco-eval") from None
            gt = FasterCOCO(gt_dict)
            dt = gt.loadRes(dets)
            evaluator = COCOeval_faster(gt, dt, iou_type, print_function=logger.debug)
        else:
            raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        evaluator.params.imgIds = ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    logger.debug("COCOeval:\n%s", output.getvalue())
    stats = [float(v) for v in list(evaluator.stats)[: len(COCO_METRICS)]]
    metrics: dict[str, Any] = dict(zip(COCO_METRICS, stats))
    metrics["num_images"] = len(ids)
    metrics["num_detections"] = sum(1 for d in dets if d["image_id"] in set(ids))
    precision = np.asarray(evaluator.eval["precision"])
    iou_thrs = np.asarray(evaluator.params.iouThrs)
    cat_ids = list(evaluator.params.catIds)
    rows = _category_rows(dataset, dets, ids, precision, cat_ids, iou_thrs)
    curves = precision_curves(precision, iou_thrs, np.asarray(evaluator.params.recThrs))
    return DetectionScore(metrics=metrics, per_category=rows, curves=curves)


def _check_segm(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]], path: str) -> None:
    """Mask AP needs a segmentation on every ground-truth annotation and every result."""
    missing = [a.get("id") for a in gt["annotations"] if not a.get("segmentation")]
    if missing:
        raise EvalError(
            f"{path}: mask AP needs a 'segmentation' (polygons or RLE) on every annotation; "
            f"{len(missing)} have none (ids {missing[:5]})"
        )
    bad = [i for i, r in enumerate(results) if not isinstance(r.get("segmentation"), dict)]
    if bad:
        raise EvalError(f"mask AP needs a 'segmentation' RLE on every result; results {bad[:5]} have none")


def merge_mask_score(box: DetectionScore, mask: DetectionScore) -> DetectionScore:
    """Box score with the mask metrics added as ``mask_<name>`` (headline and per-category AP / AP50 /
    AP75); the curves stay the box curves, the mask curves go under ``curves["mask"]``."""
    metrics = dict(box.metrics)
    metrics.update({f"mask_{k}": mask.metrics[k] for k in COCO_METRICS})
    rows = {row["id"]: row for row in mask.per_category}
    per_category = [
        {**row, **{f"mask_{k}": rows[row["id"]][k] for k in ("AP", "AP50", "AP75") if row["id"] in rows}}
        for row in box.per_category
    ]
    return DetectionScore(
        metrics=metrics, per_category=per_category, curves={**box.curves, "mask": mask.curves}
    )


# ----------------------------------------------------------------------------------- with a model


def _examples_for_report(
    dataset: CocoDataset,
    image_dir: Path | None,
    image_ids: Sequence[Any],
    records: Mapping[Any, Mapping[str, Any]] | None,
    results: Sequence[Mapping[str, Any]],
    plus_one: bool,
) -> dict[str, Any]:
    """What the report needs to draw examples: image paths, GT and predictions (xyxy) per image."""
    return {
        "dataset": dataset,
        "image_dir": image_dir,
        "image_ids": list(image_ids),
        "records": records,
        "results": results,
        "plus_one": plus_one,
    }


def _example_ids(dataset: CocoDataset, image_ids: Sequence[Any], count: int) -> list[Any]:
    """The images drawn in examples.png: the first ``count`` with ground truth (else the first ones)."""
    if count <= 0:
        return []
    annotated = {a["image_id"] for a in dataset.data["annotations"]}
    chosen = [i for i in image_ids if i in annotated][:count]
    return chosen or list(image_ids[:count])


def build_work_items(dataset: CocoDataset, image_dir: Path, image_ids: Sequence[Any]) -> list[WorkItem]:
    """One item per image, its file resolved now (a missing file is an error before any inference)."""
    if not image_dir.is_dir():
        raise EvalError(f"image folder not found: {image_dir}")
    items = []
    for image_id in image_ids:
        record = dataset.images[image_id]
        where = dataset.where_image(image_id)
        path = resolve_image_path(image_dir, record, where)
        size = (
            (float(record["width"]), float(record["height"]))
            if "width" in record and "height" in record
            else None
        )
        items.append(WorkItem(key=image_id, path=path, size=size, where=where))
    return items


def select_images(dataset: CocoDataset, max_images: int | None) -> list[Any]:
    """Image ids in evaluation order (sorted), the first ``max_images`` when given."""
    ids = dataset.image_ids
    if max_images is not None:
        if max_images <= 0:
            raise EvalError(f"max_images must be positive, got {max_images}")
        ids = ids[:max_images]
    if not ids:
        raise EvalError(f"{dataset.path}: no images to evaluate")
    return ids


def evaluate_detection(
    task: str,
    model: Any,
    dataset: CocoDataset,
    image_dir: str | Path,
    scorer: Callable[[CocoDataset, list[dict[str, Any]], list[Any]], DetectionScore],
    options: EvalOptions,
    *,
    plus_one: bool,
    chunk_size: int | None,
    caption_prompt: Sequence[dict[str, str]] | None = None,
    extra_settings: Mapping[str, Any] | None = None,
    collector_factory: Callable[[list[Any], set[Any]], Collector] | None = None,
) -> EvalResult:
    """Run ``model`` on the images of ``dataset`` with its class-list prompts and score the detections.

    Every rank takes part (images sharded, predictions gathered); rank 0 scores and writes the report, and
    every rank returns the same metrics. ``collector_factory(image_ids, example_ids)``: a
    :class:`~glip.eval.inference.Collector` whose merge gives ``(results, example records)`` instead of
    gathering every record (LVIS: per-category top-k on the fly). ``options.masks``: the predictor's mask
    head also segments every detection; records carry a COCO RLE ``segmentation`` per box.
    ``options.detections_per_img`` None keeps the model's own cap (the public ``evaluate_*`` functions
    give their protocol's).
    """
    max_images, batch_size, out_dir = options.max_images, options.batch_size, options.out_dir
    device, model_name, masks = options.device, options.model_name, options.masks
    report, num_examples = options.report, options.num_examples
    detections_per_img = options.detections_per_img
    image_dir = Path(image_dir)
    image_ids = select_images(dataset, max_images)
    items = build_work_items(dataset, image_dir, image_ids)
    predictor = as_predictor(model, device)
    cat_ids = dataset.category_ids
    names = [dataset.categories[c] for c in cat_ids]
    prompts = detection_prompts(predictor, names, chunk_size, caption_prompt, where=dataset.path)
    post = predictor.model.config.postprocess
    dets_per_img = detections_per_img if detections_per_img is not None else post.detections_per_img
    settings: dict[str, Any] = {
        "task": task,
        "model": model_name or getattr(predictor.model.config, "name", "?"),
        "annotations": dataset.path,
        "images": str(image_dir),
        "num_images": len(image_ids),
        "num_categories": len(cat_ids),
        "num_prompts": len(prompts),
        "prompts": [p.caption for p in prompts],
        "chunk_size": chunk_size,
        "detections_per_img": dets_per_img,
        "pre_nms_thresh": post.pre_nms_thresh,
        "nms_thresh": post.nms_thresh,
        "box_export": "xywh, w = x2 - x1 + 1 (official legacy)" if plus_one else "xywh, w = x2 - x1",
        "world_size": rank_info().world_size,
        "batch_size": batch_size,
        **dict(extra_settings or {}),
    }
    fingerprint = None
    if out_dir is not None:
        if Path(dataset.path).is_file():
            ann_digest = file_digest(dataset.path)
        else:
            ann_digest = hashlib.sha1(
                json.dumps(dataset.data, sort_keys=True, default=str).encode()
            ).hexdigest()
        fingerprint = {
            "task": task,
            "annotations": ann_digest,
            "model": settings["model"],
            "weights": weights_checksum(predictor.model),
            "prompts": settings["prompts"],
            "detections_per_img": dets_per_img,
            "pre_nms_thresh": post.pre_nms_thresh,
            "nms_thresh": post.nms_thresh,
        }
        if masks:  # only then, so that box-only caches keep their fingerprint
            fingerprint["masks"] = weights_checksum(predictor.mask_head)

    def predict(batch: list[WorkItem]) -> list[dict[str, Any]]:
        return predict_images(
            predictor,
            batch,
            prompts,
            names,
            lambda i: cat_ids[i],
            batch_size,
            masks=masks,
            detections_per_img=dets_per_img,
        )

    example_ids = _example_ids(dataset, image_ids, num_examples if report and out_dir is not None else 0)
    collector = collector_factory(image_ids, set(example_ids)) if collector_factory is not None else None
    merged = run_inference(items, predict, options, collector=collector, fingerprint=fingerprint, desc=task)

    def finish() -> EvalResult:
        if collector is None:
            records = merged
            results = records_to_coco_results(records, image_ids, plus_one)
        else:
            results, records = merged
        score = scorer(dataset, results, image_ids)
        result = EvalResult(
            task=task,
            metrics=score.metrics,
            per_category=score.per_category,
            settings=settings,
            curves=score.curves,
        )
        if out_dir is not None and report:
            from glip.eval.report import write_detection_report

            if task != "lvis":
                out = Path(out_dir)
                out.mkdir(parents=True, exist_ok=True)
                atomic_write_text(out / "predictions.coco.json", json.dumps(results))
                result.files["predictions"] = str(out / "predictions.coco.json")
            write_detection_report(
                result,
                out_dir,
                _examples_for_report(dataset, image_dir, example_ids, records, results, plus_one),
                num_examples=num_examples,
            )
        return result

    return run_on_main(finish)


def evaluate_coco(
    model: Any,
    ann_file: str | Path | Mapping[str, Any],
    image_dir: str | Path | None = None,
    options: EvalOptions | None = None,
    *,
    chunk_size: int | None = None,
    override_category: Any = None,
    caption_prompt: Sequence[dict[str, str]] | None = None,
    mask_head: Any = None,
) -> EvalResult:
    """COCO box AP of a GLIP model (or :class:`~glip.predictor.GLIPPredictor`) on a COCO-format dataset.

    Args:
        model: a GLIP model, a GLIPPredictor, or a DDP-wrapped GLIP model.
        ann_file: COCO-format ground truth (path or dict).
        image_dir: folder of the images (``file_name`` relative to it); default: the annotation's folder.
        options: how to run (:class:`~glip.eval.options.EvalOptions`: batch size, max images, detections
            per image (default ``COCO_DETECTIONS_PER_IMG`` = 100), device, cache / report folder, scorer
            backend, masks ...); default ``EvalOptions()``. ``options.masks``: also mask AP
            (``COCOeval(iouType="segm")``) of the masks of a GLIPv2 mask head (``mask_head``, or the
            predictor's own); the ground truth needs a ``segmentation`` on every annotation.
        chunk_size: classes per prompt (None: as many as fit 256 tokens; -1: one prompt).
        override_category: rename categories (official ``DATASETS.OVERRIDE_CATEGORY``).
        caption_prompt: per-class prefix/name/suffix (official ``DATASETS.CAPTION_PROMPT``).
        mask_head: a :class:`glip.models.mask_head.MaskHead` for ``options.masks``.

    Returns:
        :class:`EvalResult`; ``metrics`` has AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl
        (boxes), and with ``masks`` the same names prefixed ``mask_`` (masks).
    """
    options = options if options is not None else EvalOptions()
    if options.detections_per_img is None:
        options = options.replace(detections_per_img=COCO_DETECTIONS_PER_IMG)
    backend, masks = options.backend, options.masks
    check_backend(backend)
    dataset = load_coco_dataset(ann_file, "coco")
    if override_category is not None:
        apply_category_override(dataset, override_category, dataset.path)
    if image_dir is None:
        if isinstance(ann_file, Mapping):
            raise EvalError("give image_dir with an in-memory annotation dict")
        image_dir = Path(ann_file).parent

    def scorer(ds: CocoDataset, results: list[dict[str, Any]], ids: list[Any]) -> DetectionScore:
        box = score_coco(ds, results, ids, backend=backend)
        if not masks:
            return box
        return merge_mask_score(box, score_coco(ds, results, ids, backend=backend, iou_type="segm"))

    if masks:
        _check_segm(dataset.data, [], dataset.path)  # before any inference
        model = as_predictor(model, options.device)
        if mask_head is not None:
            model.mask_head = mask_head.to(model.device).eval()
        if model.mask_head is None:
            raise EvalError("masks=True needs a mask head (mask_head=..., or a predictor that has one)")
    elif mask_head is not None:
        raise EvalOptionsError("mask_head is used with masks: give EvalOptions(masks=True) too")

    return evaluate_detection(
        "coco",
        model,
        dataset,
        image_dir,
        scorer,
        options,
        plus_one=True,
        chunk_size=chunk_size,
        caption_prompt=caption_prompt,
        extra_settings={"backend": backend, **({"masks": True} if masks else {})},
    )
