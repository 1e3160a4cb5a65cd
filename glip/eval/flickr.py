"""Phrase grounding on Flickr30K Entities: Recall@1/5/10 (and the upper bound) under the any-box
("separate") and merged-box protocols, from MDETR-style annotation files.

MDETR-style file (``final_flickr_separateGT_{val,test}.json``): COCO-like, one ``images`` record per
(image, sentence) with ``caption``, ``tokens_positive_eval`` (one list of char spans per phrase that has
boxes, in sentence order), ``original_img_id``, ``sentence_id``; ``annotations`` are xywh boxes whose
``tokens_positive`` lists the spans of the phrases they belong to.

Protocol (official ``evaluation/flickr/flickr_eval.py``, from MDETR; GLIP config
``DATASETS.FLICKR_GT_TYPE "separate"``):

* the model runs once per sentence with the caption as prompt and phrase j (label j + 1) = the tokens of
  its spans; detections are sorted by score and grouped by phrase;
* a phrase is recalled at k when one of its k best boxes has IoU >= 0.5 with a ground-truth box of the
  phrase: any of its boxes (any-box / separate), or the smallest box enclosing them all (merged);
  the upper bound uses every predicted box of the phrase;
* IoU without the "+1" (``(x2 - x1) * (y2 - y1)``); recall = hits / phrases over all evaluated phrases.

Differences from the official evaluator: it reads the boxes from the Flickr30K Entities XML files; here they
come from the MDETR file (identical except where MDETR fused near-identical boxes (IoU >= 0.95) of two
entities into one), and the per-type recalls (people, clothing, ...) are not reported: their phrase types
are only in the Sentences files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glip.eval.common import EvalError, EvalResult, rank_info, resolve_image_path, run_on_main
from glip.eval.data import _check_box, _is_number, _require, read_json, sort_key
from glip.eval.inference import (
    WorkItem,
    as_predictor,
    file_digest,
    grounding_prompt,
    predict_images,
    run_inference,
    weights_checksum,
)
from glip.eval.options import EvalOptions, EvalOptionsError
from glip.fileio import atomic_write_text

logger = logging.getLogger(__name__)

#: default cap on detections per image for Flickr30K (as COCO's; Recall@10 ranks at most 10 per phrase).
FLICKR_DETECTIONS_PER_IMG = 100
RECALL_KS: tuple[int, ...] = (1, 5, 10)
PROTOCOLS: tuple[str, ...] = ("anybox", "merged")

Box = list[float]


@dataclass
class FlickrSentence:
    """One (image, sentence) record. phrases: P lists of char spans; boxes: P lists of xyxy GT boxes."""

    key: Any
    where: str
    record: dict[str, Any]
    caption: str
    phrases: list[list[tuple[int, int]]]
    boxes: list[list[Box]]

    @property
    def phrase_texts(self) -> list[str]:
        return [" / ".join(self.caption[s:e] for s, e in spans) for spans in self.phrases]


@dataclass
class FlickrDataset:
    """A checked MDETR-style grounding file. ``sentences``: id -> record, only those with phrases."""

    path: str
    sentences: dict[Any, FlickrSentence] = field(default_factory=dict)
    by_original: dict[tuple[str, int], Any] = field(default_factory=dict)

    @property
    def keys(self) -> list[Any]:
        return sorted(self.sentences, key=sort_key)


def _spans(value: Any, caption: str, where: str) -> list[tuple[int, int]]:
    if not isinstance(value, list | tuple):
        raise EvalError(f"{where}: spans must be a list of [begin, end], got {value!r}")
    spans = []
    for span in value:
        if (
            not isinstance(span, list | tuple)
            or len(span) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in span)
        ):
            raise EvalError(f"{where}: a span is [begin, end] (characters), got {span!r}")
        beg, end = int(span[0]), int(span[1])
        if not 0 <= beg < end <= len(caption):
            raise EvalError(
                f"{where}: span [{beg}, {end}] is not inside the caption ({len(caption)} characters)"
            )
        spans.append((beg, end))
    return spans


def load_flickr_dataset(source: str | Path | Mapping[str, Any]) -> FlickrDataset:
    """Read and check an MDETR-style Flickr30K Entities file (see the module docstring).

    Without ``tokens_positive_eval`` a record's phrases are the distinct spans of its annotations' ``tokens_positive``
    (one single-span phrase each, by position).
    """
    if isinstance(source, Mapping):
        data: Any = dict(source)
        path = "<dict>"
    else:
        path = str(source)
        data = read_json(source, "annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise EvalError(
            f"{path}: an MDETR-style grounding file is an object with 'images' and 'annotations' lists"
        )
    if not isinstance(data.get("annotations"), list):
        raise EvalError(f"{path}: missing the 'annotations' list")
    dataset = FlickrDataset(path=path)
    records: dict[Any, tuple[int, dict[str, Any]]] = {}
    for index, image in enumerate(data["images"]):
        where = f"{path}: images[{index}]"
        _require(image, ("id", "file_name", "caption"), where)
        where = f"{where} (id {image['id']!r}, {image.get('file_name')!r})"
        if image["id"] in records:
            raise EvalError(f"{where}: duplicate image id")
        if not isinstance(image["caption"], str):
            raise EvalError(f"{where}: 'caption' must be a string")
        for key in ("width", "height"):
            if key in image and isinstance(image[key], str) and image[key].strip().isdigit():
                image[key] = int(image[key])  # MDETR's Flickr files store the XML's strings
        records[image["id"]] = (index, image)
    boxes_of: dict[Any, list[tuple[list[tuple[int, int]], Box]]] = {key: [] for key in records}
    for index, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{index}]"
        _require(ann, ("image_id", "bbox", "tokens_positive"), where)
        where = f"{where} (id {ann.get('id')!r})"
        if ann["image_id"] not in records:
            raise EvalError(f"{where}: unknown image_id {ann['image_id']!r} (not in 'images')")
        x, y, w, h = _check_box(ann["bbox"], where, "xywh")
        caption = records[ann["image_id"]][1]["caption"]
        spans = _spans(ann["tokens_positive"], caption, f"{where} tokens_positive")
        boxes_of[ann["image_id"]].append((spans, [x, y, x + w, y + h]))
    for key, (index, image) in records.items():
        where = f"{path}: images[{index}] (id {key!r}, {image.get('file_name')!r})"
        caption = image["caption"]
        if "tokens_positive_eval" in image:
            if not isinstance(image["tokens_positive_eval"], list):
                raise EvalError(
                    f"{where}: 'tokens_positive_eval' must be a list (one list of spans per phrase)"
                )
            phrases = [
                _spans(p, caption, f"{where} tokens_positive_eval[{j}]")
                for j, p in enumerate(image["tokens_positive_eval"])
            ]
        else:
            distinct = sorted({span for spans, _ in boxes_of[key] for span in spans})
            phrases = [[span] for span in distinct]
        gt: list[list[Box]] = []
        for j, spans in enumerate(phrases):
            wanted = set(spans)
            matched = [box for ann_spans, box in boxes_of[key] if wanted & set(ann_spans)]
            if not matched:
                raise EvalError(
                    f"{where}: phrase {j} {caption[spans[0][0] : spans[0][1]]!r} has no box (no annotation's "
                    "tokens_positive has its span)"
                )
            gt.append(matched)
        if not phrases:
            continue  # official: sentences without a phrase with boxes are not evaluated
        dataset.sentences[key] = FlickrSentence(key, where, image, caption, phrases, gt)
        if "original_img_id" in image and "sentence_id" in image:
            dataset.by_original[(str(image["original_img_id"]), int(image["sentence_id"]))] = key
    if not dataset.sentences:
        raise EvalError(f"{path}: no record has a phrase with boxes")
    return dataset


# ----------------------------------------------------------------------------------------------- recall


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes without "+1" (official flickr_eval); 0 when the union is empty."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def merge_boxes(boxes: Sequence[Sequence[float]]) -> list[Box]:
    """The smallest box enclosing all ``boxes`` (merged-box protocol), as a one-element list."""
    return [
        [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ]
    ]


def flickr_recall(
    dataset: FlickrDataset,
    predictions: Mapping[Any, Sequence[Sequence[Sequence[float]]]],
    *,
    merged: bool = False,
    ks: Sequence[int] = RECALL_KS,
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """Recall@k of ranked per-phrase boxes.

    Args:
        dataset: the ground truth.
        predictions: record id -> P lists (one per phrase, in ``tokens_positive_eval`` order) of xyxy boxes,
            best first. Every evaluated record needs one.
        merged: merged-box protocol (else any-box).

    Returns:
        ``{"R@1", "R@5", "R@10", "upper_bound", "num_phrases"}`` (fractions).
    """
    hits = {k: 0 for k in ks}
    upper = 0
    total = 0
    missing = [key for key in dataset.keys if key not in predictions]
    if missing:
        where = dataset.sentences[missing[0]].where
        raise EvalError(f"no prediction for {len(missing)} evaluated record(s), e.g. {where}")
    for key in dataset.keys:
        sentence = dataset.sentences[key]
        ranked = predictions[key]
        if len(ranked) != len(sentence.phrases):
            raise EvalError(
                f"{sentence.where}: the prediction has {len(ranked)} phrase list(s), the record has "
                f"{len(sentence.phrases)} phrase(s)"
            )
        for boxes, gt in zip(ranked, sentence.boxes):
            targets = merge_boxes(gt) if merged else gt
            best = [max((box_iou(p, t) for t in targets), default=0.0) for p in boxes]
            total += 1
            for k in ks:
                if any(v >= iou_threshold for v in best[:k]):
                    hits[k] += 1
            if any(v >= iou_threshold for v in best):
                upper += 1
    result: dict[str, Any] = {f"R@{k}": hits[k] / total for k in ks}
    result["upper_bound"] = upper / total
    result["num_phrases"] = total
    return result


def records_to_phrase_boxes(
    record: Mapping[str, Any], num_phrases: int
) -> tuple[list[list[Box]], list[list[float]]]:
    """Our per-image record (labels = 0-based phrase index) -> per-phrase box lists (best first) and
    their scores (official ``flickr_post_process``)."""
    order = sorted(range(len(record["scores"])), key=lambda i: -record["scores"][i])
    boxes: list[list[Box]] = [[] for _ in range(num_phrases)]
    scores: list[list[float]] = [[] for _ in range(num_phrases)]
    for i in order:
        label = int(record["labels"][i])
        if 0 <= label < num_phrases:
            boxes[label].append(list(record["boxes"][i]))
            scores[label].append(float(record["scores"][i]))
    return boxes, scores


def score_flickr(
    dataset: FlickrDataset,
    predictions: Mapping[Any, Sequence[Sequence[Sequence[float]]]],
    ks: Sequence[int] = RECALL_KS,
) -> dict[str, Any]:
    """Both protocols: ``{"anybox_R@1", ..., "anybox_upper_bound", "merged_R@1", ..., "num_phrases",
    "num_sentences"}``."""
    metrics: dict[str, Any] = {}
    for protocol in PROTOCOLS:
        recall = flickr_recall(dataset, predictions, merged=protocol == "merged", ks=ks)
        metrics["num_phrases"] = recall.pop("num_phrases")
        metrics.update({f"{protocol}_{name}": value for name, value in recall.items()})
    metrics["num_sentences"] = len(dataset.sentences)
    return metrics


def load_flickr_predictions(
    source: str | Path | list[Any], dataset: FlickrDataset
) -> dict[Any, list[list[Box]]]:
    """Read grounding predictions: a list of ``{"image_id", "boxes": [per phrase: [[x1, y1, x2, y2], ...]]}``
    (``image_id`` = the record id of the annotation file; boxes best first), or the official/MDETR dump
    with ``image_id`` = ``original_img_id`` plus ``sentence_id``."""
    path = "<list>" if isinstance(source, list) else str(source)
    data = source if isinstance(source, list) else read_json(source, "predictions file")
    if not isinstance(data, list):
        raise EvalError(f"{path}: a predictions file is a list of records, got {type(data).__name__}")
    known = {str(k): k for k in dataset.sentences}
    result: dict[Any, list[list[Box]]] = {}
    for index, record in enumerate(data):
        where = f"{path}: record {index}"
        _require(record, ("image_id", "boxes"), where)
        where = f"{where} (image_id {record['image_id']!r})"
        if "sentence_id" in record:
            key = dataset.by_original.get((str(record["image_id"]), int(record["sentence_id"])))
            if key is None:
                logger.debug("%s: sentence %s not evaluated: ignored", where, record["sentence_id"])
                continue
        else:
            if record["image_id"] not in dataset.sentences and str(record["image_id"]) not in known:
                raise EvalError(f"{where}: unknown image_id (no evaluated record of {dataset.path} has it)")
            key = (
                record["image_id"]
                if record["image_id"] in dataset.sentences
                else known[str(record["image_id"])]
            )
        if key in result:
            logger.warning("%s: a second prediction for the same sentence: ignored (official)", where)
            continue
        if not isinstance(record["boxes"], list):
            raise EvalError(f"{where}: 'boxes' must be a list (one list of boxes per phrase)")
        phrases = []
        for j, boxes in enumerate(record["boxes"]):
            if not isinstance(boxes, list):
                raise EvalError(f"{where}: boxes[{j}] must be a list of [x1, y1, x2, y2]")
            phrases.append([_check_box(b, f"{where} boxes[{j}][{i}]", "xyxy") for i, b in enumerate(boxes)])
        result[key] = phrases
    return result


# --------------------------------------------------------------------------------------- with a model


def evaluate_flickr(
    model: Any,
    ann_file: str | Path | Mapping[str, Any],
    image_dir: str | Path,
    options: EvalOptions | None = None,
) -> EvalResult:
    """Flickr30K Entities phrase grounding recall of a GLIP model (both protocols).

    ``options``: how to run (:class:`~glip.eval.options.EvalOptions`); ``max_images`` limits the number of
    (image, sentence) records (sorted by id), ``detections_per_img`` defaults to
    ``FLICKR_DETECTIONS_PER_IMG`` = 100, ``batch_size`` is unused (each record has its own caption),
    ``backend`` is unused and ``masks`` not supported. Returns an :class:`EvalResult` whose metrics are
    those of :func:`score_flickr`.
    """
    options = options if options is not None else EvalOptions()
    if options.masks:
        raise EvalOptionsError("EvalOptions(masks=True) is for COCO-format sets (evaluate_coco), not Flickr")
    max_images, out_dir, device = options.max_images, options.out_dir, options.device
    model_name, report, num_examples = options.model_name, options.report, options.num_examples
    detections_per_img = options.detections_per_img or FLICKR_DETECTIONS_PER_IMG
    dataset = load_flickr_dataset(ann_file)
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise EvalError(f"image folder not found: {image_dir}")
    keys = dataset.keys[:max_images] if max_images else dataset.keys
    if max_images:
        dataset.sentences = {k: dataset.sentences[k] for k in keys}
    items = []
    for key in keys:
        sentence = dataset.sentences[key]
        record = sentence.record
        path = resolve_image_path(image_dir, record, sentence.where)
        size = (float(record["width"]), float(record["height"])) if _is_number(record.get("width")) else None
        items.append(WorkItem(key=key, path=path, size=size, where=sentence.where))
    predictor = as_predictor(model, device)
    prompts = {
        key: grounding_prompt(predictor, s.caption, s.phrases, s.where)
        for key, s in ((k, dataset.sentences[k]) for k in keys)
    }
    post = predictor.model.config.postprocess
    dets = detections_per_img if detections_per_img is not None else post.detections_per_img
    settings: dict[str, Any] = {
        "task": "flickr",
        "model": model_name or getattr(predictor.model.config, "name", "?"),
        "annotations": dataset.path,
        "images": str(image_dir),
        "num_sentences": len(keys),
        "detections_per_img": dets,
        "pre_nms_thresh": post.pre_nms_thresh,
        "nms_thresh": post.nms_thresh,
        "iou_threshold": 0.5,
        "protocols": {
            "anybox": "any GT box of the phrase",
            "merged": "the box enclosing the phrase's GT boxes",
        },
        "world_size": rank_info().world_size,
    }
    fingerprint = None
    if out_dir is not None:
        fingerprint = {
            "task": "flickr",
            "annotations": file_digest(dataset.path) if Path(dataset.path).is_file() else dataset.path,
            "model": settings["model"],
            "weights": weights_checksum(predictor.model),
            "detections_per_img": dets,
            "pre_nms_thresh": post.pre_nms_thresh,
        }

    def predict(batch: list[WorkItem]) -> list[dict[str, Any]]:
        records = []
        for item in batch:
            names = dataset.sentences[item.key].phrase_texts
            records += predict_images(
                predictor, [item], [prompts[item.key]], names, lambda i: i, 1, detections_per_img=dets
            )
        return records

    one_at_a_time = options.replace(batch_size=1)  # each record has its own caption
    records = run_inference(items, predict, one_at_a_time, fingerprint=fingerprint, desc="flickr")

    def finish() -> EvalResult:
        grouped = {k: records_to_phrase_boxes(records[k], len(dataset.sentences[k].phrases)) for k in keys}
        ranked = {k: boxes for k, (boxes, _) in grouped.items()}
        metrics = score_flickr(dataset, ranked)
        result = EvalResult(task="flickr", metrics=metrics, settings=settings)
        if out_dir is not None and report:
            from glip.eval.report import write_flickr_report

            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            dump = [{"image_id": k, "boxes": grouped[k][0], "scores": grouped[k][1]} for k in keys]
            atomic_write_text(out / "predictions.flickr.json", json.dumps(dump))
            result.files["predictions"] = str(out / "predictions.flickr.json")
            write_flickr_report(result, out, dataset, image_dir, ranked, num_examples=num_examples)
        return result

    return run_on_main(finish)
