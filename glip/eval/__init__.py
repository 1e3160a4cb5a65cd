"""Evaluation on the GLIP benchmarks, following the official protocols (see docs/evaluation.md).

    from glip.eval import EvalOptions, evaluate_coco, evaluate_lvis, evaluate_odinw, evaluate_flickr
    options = EvalOptions(batch_size=4, out_dir="results/coco")
    result = evaluate_coco(model, "instances_val2017.json", "val2017", options)
    result.metrics["AP"]

Every ``evaluate_*`` / ``score_*`` function takes one :class:`EvalOptions` (batch size, max images,
detections per image, device, cache and report folder, scorer backend, masks) beside its task's own
arguments (model, files, protocol settings such as LVIS's ``chunk_size`` / ``fixed_ap``).

* :func:`evaluate_coco` / :func:`score_coco`: COCO-format box AP (pycocotools or faster-coco-eval);
* :func:`evaluate_lvis` / :func:`score_lvis`: LVIS AP, APr/APc/APf, Fixed AP (GLIP/MDETR) or standard;
* :func:`evaluate_odinw`: several COCO-format datasets, each dataset's AP and their average;
* :func:`evaluate_flickr` / :func:`flickr_recall`: phrase grounding Recall@1/5/10, any-box and merged;
* the ``glip eval`` command: :mod:`glip.cli.eval`.

Bad inputs raise :class:`EvalError` (a ``ValueError``) naming the file and the record. The scorers need
the ``eval`` extra (pycocotools, lvis; optionally faster-coco-eval; matplotlib for the plots).
"""

from glip.eval.coco import COCO_METRICS, DetectionScore, evaluate_coco, score_coco
from glip.eval.common import EvalError, EvalResult
from glip.eval.data import CocoDataset, load_coco_dataset, load_detection_predictions
from glip.eval.flickr import (
    FlickrDataset,
    evaluate_flickr,
    flickr_recall,
    load_flickr_dataset,
    load_flickr_predictions,
    score_flickr,
)
from glip.eval.lvis import LVIS_METRICS, evaluate_lvis, fixed_ap_selection, score_lvis
from glip.eval.odinw import evaluate_odinw, load_suite, score_detection_file
from glip.eval.options import EvalOptions, EvalOptionsError

__all__ = [
    "COCO_METRICS",
    "LVIS_METRICS",
    "CocoDataset",
    "DetectionScore",
    "EvalError",
    "EvalOptions",
    "EvalOptionsError",
    "EvalResult",
    "FlickrDataset",
    "evaluate_coco",
    "evaluate_flickr",
    "evaluate_lvis",
    "evaluate_odinw",
    "fixed_ap_selection",
    "flickr_recall",
    "load_coco_dataset",
    "load_detection_predictions",
    "load_flickr_dataset",
    "load_flickr_predictions",
    "load_suite",
    "score_coco",
    "score_detection_file",
    "score_flickr",
    "score_lvis",
]
