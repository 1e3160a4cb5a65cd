"""ODinW-style multi-dataset evaluation: several COCO-format datasets, each with its own classes and
optional prompt overrides, evaluated in one go; reports each dataset's AP and the average (the ODinW
leaderboard number is the mean of the per-dataset COCO AP@[.5:.95]).

A suite file (YAML or JSON) lists the datasets::

    root: /data/DATASET            # optional: base of relative paths (default: the suite file's folder)
    model: glip_t                  # optional default model (``--model`` wins)
    datasets:
      - name: Aquarium
        ann: odinw/Aquarium/Aquarium Combined.v2-raw-1024.coco/valid/annotations_without_background.json
        images: odinw/Aquarium/Aquarium Combined.v2-raw-1024.coco/valid
        override_category: [{"id": 1, "name": "fish"}, ...]    # optional, official OVERRIDE_CATEGORY
        caption_prompt: [{"prefix": "", "name": "fish", "suffix": ""}, ...]   # optional, per class by id
        model: runs/aquarium_5shot/model   # optional: a fine-tuned / few-shot model for this dataset
        chunk_size: 40                     # optional
        predictions: preds/aquarium.json   # optional: score this file instead of running a model
      - glip_config: configs/odinw_13/AerialMaritimeDrone_large.yaml   # an official ODinW task YAML:
        # ann / images / override_category / caption_prompt are read from it (DATASETS.REGISTER of its
        # DATASETS.TEST split, OVERRIDE_CATEGORY, CAPTION_PROMPT); paths relative to ``root`` (= DATASET/)

The official ODinW evaluation (README "ODinW / Custom Dataset Evaluation") runs the COCO evaluation of
each dataset with ``DATASETS.USE_OVERRIDE_CATEGORY True DATASETS.USE_CAPTION_PROMPT True`` and no
chunking: what :func:`glip.eval.coco.evaluate_coco` does with those overrides.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glip.eval.coco import evaluate_coco, score_coco
from glip.eval.common import EvalError, EvalResult, rank_info
from glip.eval.data import apply_category_override, load_coco_dataset, load_detection_predictions
from glip.eval.options import EvalOptions

logger = logging.getLogger(__name__)


@dataclass
class OdinwDataset:
    """One dataset of a suite (paths resolved)."""

    name: str
    ann: Path
    images: Path | None
    override_category: Any = None
    caption_prompt: list[dict[str, str]] | None = None
    model: str | None = None
    chunk_size: int | None = None
    predictions: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _safe_name(name: str) -> str:
    """A dataset name as one folder name under ``out_dir``: no separators, no ``..`` / leading dots."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "dataset"


def _read_structured(path: Path) -> Any:
    if not path.is_file():
        raise EvalError(f"file not found: {path}")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise EvalError(f"{path}: not valid YAML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvalError(f"{path}: not valid JSON: {exc}") from None


def _from_official_yaml(config_path: Path, root: Path, where: str) -> dict[str, Any]:
    """ann / images / override_category / caption_prompt of an official ODinW task YAML."""
    config = _read_structured(config_path)
    datasets = (config or {}).get("DATASETS") if isinstance(config, dict) else None
    if not isinstance(datasets, dict) or not isinstance(datasets.get("REGISTER"), dict):
        raise EvalError(f"{where}: {config_path} has no DATASETS.REGISTER (not an ODinW task config?)")
    test = datasets.get("TEST", '("val",)')
    try:
        splits = ast.literal_eval(test) if isinstance(test, str) else test
    except (ValueError, SyntaxError):
        raise EvalError(f"{where}: {config_path}: cannot read DATASETS.TEST {test!r}") from None
    split = (splits[0] if isinstance(splits, list | tuple) else splits) or "val"
    entry = datasets["REGISTER"].get(split)
    if not isinstance(entry, dict) or "ann_file" not in entry:
        raise EvalError(f"{where}: {config_path}: DATASETS.REGISTER has no '{split}' with an ann_file")
    result: dict[str, Any] = {
        "name": config_path.stem,
        "ann": str(root / entry["ann_file"]),
        "images": str(root / entry.get("img_dir", "")),
    }
    if datasets.get("OVERRIDE_CATEGORY"):
        result["override_category"] = datasets["OVERRIDE_CATEGORY"]
    prompt = datasets.get("CAPTION_PROMPT")
    if prompt:
        result["caption_prompt"] = json.loads(prompt) if isinstance(prompt, str) else prompt
    return result


def load_suite(
    source: str | Path | Mapping[str, Any] | Sequence[tuple[str | Path, str | Path | None]],
) -> tuple[list[OdinwDataset], dict[str, Any]]:
    """Datasets of a suite file (see the module docstring), a suite dict, or ``[(ann, images), ...]``.

    Returns:
        (datasets, suite-level options such as the default ``model``).
    """
    if isinstance(source, list | tuple):
        datasets = []
        for index, (ann, images) in enumerate(source):
            ann = Path(ann)
            name = (
                ann.parent.name if ann.stem in ("annotations", "annotations_without_background") else ann.stem
            )
            datasets.append(
                OdinwDataset(name=f"{index}_{name}", ann=ann, images=Path(images) if images else None)
            )
        return datasets, {}
    if isinstance(source, Mapping):
        suite, path, root = dict(source), "<suite>", Path(".")
    else:
        path = str(source)
        suite = _read_structured(Path(source))
        root = Path(source).parent
    if not isinstance(suite, dict) or not isinstance(suite.get("datasets"), list) or not suite["datasets"]:
        raise EvalError(f"{path}: a suite is an object with a non-empty 'datasets' list")
    root = Path(suite["root"]) if suite.get("root") else root
    if not root.is_absolute() and path != "<suite>" and suite.get("root"):
        root = Path(path).parent / root
    known = {
        "name",
        "ann",
        "images",
        "override_category",
        "caption_prompt",
        "model",
        "chunk_size",
        "predictions",
    }
    datasets = []
    names: set[str] = set()
    for index, entry in enumerate(suite["datasets"]):
        where = f"{path}: datasets[{index}]"
        if not isinstance(entry, dict):
            raise EvalError(f"{where}: expected an object, got {type(entry).__name__}")
        entry = dict(entry)
        if "glip_config" in entry:
            config_path = Path(entry.pop("glip_config"))
            if not config_path.is_absolute():
                config_path = (Path(path).parent if path != "<suite>" else Path(".")) / config_path
            entry = {**_from_official_yaml(config_path, root, where), **entry}
        unknown = set(entry) - known
        if unknown:
            raise EvalError(
                f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known | {'glip_config'})}"
            )
        if "ann" not in entry:
            raise EvalError(f"{where}: missing 'ann' (the COCO-format annotation file) or 'glip_config'")

        def resolve(value: Any) -> Path:
            candidate = Path(str(value))
            return candidate if candidate.is_absolute() else root / candidate

        ann = resolve(entry["ann"])
        name = _safe_name(str(entry.get("name") or ann.parent.name or f"dataset{index}"))
        if name in names:
            name = f"{name}_{index}"
        names.add(name)
        chunk = entry.get("chunk_size")
        if chunk is not None and (not isinstance(chunk, int) or chunk == 0 or chunk < -1):
            raise EvalError(f"{where}: chunk_size must be a positive integer or -1, got {chunk!r}")
        datasets.append(
            OdinwDataset(
                name=name,
                ann=ann,
                images=resolve(entry["images"]) if entry.get("images") else None,
                override_category=entry.get("override_category"),
                caption_prompt=entry.get("caption_prompt"),
                model=entry.get("model"),
                chunk_size=chunk,
                predictions=resolve(entry["predictions"]) if entry.get("predictions") else None,
            )
        )
    options = {k: v for k, v in suite.items() if k not in ("datasets", "root")}
    return datasets, options


def _summary(result: EvalResult, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "AP": result.metrics["AP"],
        "AP50": result.metrics["AP50"],
        "AP75": result.metrics["AP75"],
        "num_images": result.metrics.get("num_images"),
        "num_categories": len(result.per_category),
    }


def _average(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if r[key] is not None and r[key] >= 0]
    return sum(values) / len(values) if values else -1.0


def _combine(
    rows: list[dict[str, Any]], results: dict[str, EvalResult], settings: dict[str, Any]
) -> EvalResult:
    metrics: dict[str, Any] = {"AP_avg": _average(rows, "AP"), "AP50_avg": _average(rows, "AP50")}
    for row in rows:
        metrics[f"AP/{row['name']}"] = row["AP"]
    metrics["num_datasets"] = len(rows)
    details = {
        name: {"metrics": r.metrics, "settings": r.settings, "files": r.files} for name, r in results.items()
    }
    return EvalResult(task="odinw", metrics=metrics, per_category=rows, settings=settings, details=details)


def evaluate_odinw(
    model: Any,
    suite: str | Path | Mapping[str, Any] | Sequence[tuple[str | Path, str | Path | None]],
    options: EvalOptions | None = None,
    *,
    load_model: Callable[[str], Any] | None = None,
    chunk_size: int | None = None,
) -> EvalResult:
    """Evaluate every dataset of ``suite`` (COCO protocol each) and average their AP.

    Args:
        model: the model for datasets without their own ``model`` (zero-shot); may be None when every
            dataset names one or has ``predictions``.
        suite: a suite file / dict (module docstring) or ``[(ann, images), ...]``.
        options: how to run (:class:`~glip.eval.options.EvalOptions`), as :func:`glip.eval.coco.evaluate_coco`
            for every dataset; ``out_dir``: per-dataset caches and reports in ``out_dir/<name>/``, the overall
            report in ``out_dir``; ``model_name``: the name of ``model`` (datasets with their own ``model``
            are named by it).
        load_model: turns a dataset's ``model`` string into a model (default: ``glip.load_model``).
        chunk_size: classes per prompt of the datasets without their own (as in
            :func:`~glip.eval.coco.evaluate_coco`).

    Returns:
        :class:`EvalResult`: ``metrics`` has ``AP_avg``, ``AP50_avg`` and ``AP/<name>``; ``per_category``
        one row per dataset; ``details`` each dataset's full metrics.
    """
    options = options if options is not None else EvalOptions()
    out_dir, model_name, max_images = options.out_dir, options.model_name, options.max_images
    datasets, suite_options = load_suite(suite)
    loaded: dict[str, Any] = {}

    def model_for(entry: OdinwDataset) -> tuple[Any, str | None]:
        if entry.model is None:
            default = model if model is not None else suite_options.get("model")
            if default is None:
                raise EvalError(f"dataset {entry.name!r}: no model (give --model or a 'model' in the suite)")
            if isinstance(default, str):
                entry_name = default
            else:
                return default, model_name
        else:
            entry_name = entry.model
        if entry_name not in loaded:
            loader = load_model
            if loader is None:
                from glip.weights.loading import load_model as loader  # type: ignore[no-redef]
            loaded[entry_name] = loader(entry_name)
        return loaded[entry_name], entry_name

    from glip.eval.coco import build_work_items, select_images

    for entry in datasets:  # check every dataset before running any model
        where = f"dataset {entry.name!r}"
        dataset = load_coco_dataset(entry.ann, "coco")
        if entry.override_category is not None:
            apply_category_override(dataset, entry.override_category, f"{where} ({entry.ann})")
        if entry.predictions is not None:
            load_detection_predictions(entry.predictions, dataset, plus_one=True)
        elif entry.images is None:
            raise EvalError(f"{where}: no 'images' folder")
        else:
            build_work_items(dataset, entry.images, select_images(dataset, max_images))

    rows: list[dict[str, Any]] = []
    results: dict[str, EvalResult] = {}
    for entry in datasets:
        logger.info("ODinW dataset %s (%s)", entry.name, entry.ann)
        sub_out = Path(out_dir) / entry.name if out_dir is not None else None
        if entry.predictions is not None:
            result = score_detection_file(
                "coco",
                entry.predictions,
                entry.ann,
                entry.images,
                options.replace(out_dir=sub_out),
                override_category=entry.override_category,
            )
        else:
            assert entry.images is not None
            entry_model, entry_model_name = model_for(entry)
            result = evaluate_coco(
                entry_model,
                entry.ann,
                entry.images,
                options.replace(out_dir=sub_out, model_name=entry_model_name),
                chunk_size=entry.chunk_size if entry.chunk_size is not None else chunk_size,
                override_category=entry.override_category,
                caption_prompt=entry.caption_prompt,
            )
        results[entry.name] = result
        rows.append(_summary(result, entry.name))
    settings = {
        "task": "odinw",
        "suite": str(suite) if isinstance(suite, str | Path) else "<in memory>",
        "datasets": [d.name for d in datasets],
        "average": "mean of the per-dataset COCO AP@[.5:.95] (ODinW leaderboard)",
        "world_size": rank_info().world_size,
    }
    combined = _combine(rows, results, settings)
    if out_dir is not None and options.report and rank_info().is_main:
        from glip.eval.report import write_odinw_report

        write_odinw_report(combined, Path(out_dir))
    return combined


def score_detection_file(
    task: str,
    predictions: str | Path | list[Any],
    ann_file: str | Path,
    image_dir: str | Path | None = None,
    options: EvalOptions | None = None,
    *,
    override_category: Any = None,
    fixed_ap: bool = True,
    topk: int | None = None,
) -> EvalResult:
    """Score an existing predictions file (COCO results or ``glip detect``'s predictions.json) for the
    "coco" (also ODinW datasets) or "lvis" task; all images of the annotation file are evaluated.

    ``options``: :class:`~glip.eval.options.EvalOptions`, of which ``out_dir`` / ``report`` /
    ``num_examples`` (the report), ``backend`` (COCO), ``masks`` (COCO: also mask AP of the records'
    ``segmentation`` RLEs) and ``detections_per_img`` (LVIS standard protocol:
    the per-image cap, default ``LVIS_DETECTIONS_PER_IMG``) apply. ``override_category``: rename categories;
    ``fixed_ap`` / ``topk``: the LVIS protocol (default Fixed AP, ``LVIS_FIXED_AP_TOPK`` per category).
    """
    from glip.eval.coco import _examples_for_report
    from glip.eval.lvis import LVIS_DETECTIONS_PER_IMG, LVIS_FIXED_AP_TOPK, score_lvis

    options = options if options is not None else EvalOptions()
    out_dir, backend, max_dets = options.out_dir, options.backend, options.detections_per_img
    report, num_examples = options.report, options.num_examples
    dataset = load_coco_dataset(ann_file, task)
    if override_category is not None:
        apply_category_override(dataset, override_category, dataset.path)
    plus_one = task != "lvis"
    results = load_detection_predictions(predictions, dataset, plus_one=plus_one)
    if task == "lvis":
        score = score_lvis(
            dataset,
            results,
            fixed_ap=fixed_ap,
            topk=topk or LVIS_FIXED_AP_TOPK,
            max_dets=max_dets or LVIS_DETECTIONS_PER_IMG,
        )
        extra: dict[str, Any] = {"protocol": "fixed AP" if fixed_ap else "standard"}
    else:
        score = score_coco(dataset, results, backend=backend)
        extra = {"backend": backend}
        if options.masks:  # mask AP of the records' COCO RLE masks (glip detect --masks)
            from glip.eval.coco import merge_mask_score

            score = merge_mask_score(score, score_coco(dataset, results, backend=backend, iou_type="segm"))
            extra["masks"] = True
    settings = {
        "task": task,
        "predictions": str(predictions) if not isinstance(predictions, list) else "<list>",
        "annotations": dataset.path,
        "images": str(image_dir) if image_dir else None,
        "num_images": len(dataset.images),
        "num_categories": len(dataset.categories),
        **extra,
    }
    result = EvalResult(
        task=task,
        metrics=score.metrics,
        per_category=score.per_category,
        settings=settings,
        curves=score.curves,
    )
    if out_dir is not None and report:
        from glip.eval.report import write_detection_report

        image_path = Path(image_dir) if image_dir else None
        examples = _examples_for_report(dataset, image_path, dataset.image_ids, None, results, plus_one)
        write_detection_report(result, out_dir, examples, num_examples=num_examples)
    return result
