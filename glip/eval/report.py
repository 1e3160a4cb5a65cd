"""Report files of an evaluation: ``metrics.json``, ``summary.md`` and PNG plots.

* ``pr_curves.png``: mean precision over categories vs recall, one curve per IoU threshold (0.50:0.95);
* ``category_ap.png``: AP per category (the best and worst 25 when there are more than 50);
* ``examples.png``: a grid of evaluated images, ground truth in green, the best predictions in colour;
* Flickr: ``recall.png`` (Recall@k per protocol); ODinW: ``odinw_ap.png`` (AP per dataset and average).

Plots need matplotlib (``pip install '.[eval]' (in the glip checkout)``); without it they are skipped with a warning. The
examples grid only needs Pillow.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from glip.eval.common import EvalError, EvalResult, load_eval_image, resolve_image_path
from glip.fileio import atomic_save, atomic_write_text
from glip.visualize import _font, color

logger = logging.getLogger(__name__)

GT_COLOR = (40, 200, 60)
TILE = 360
_warned_matplotlib = False


# ------------------------------------------------------------------------------------------- helpers


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and (math.isnan(value) or value < 0)):
        return "n/a"
    return f"{100 * float(value):.1f}"


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure with an Agg canvas (no pyplot, no global backend), or None."""
    global _warned_matplotlib
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        if not _warned_matplotlib:
            logger.warning(
                "matplotlib is not installed: plots skipped (pip install '.[eval]' (in the glip checkout))"
            )
            _warned_matplotlib = True
        return None
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def write_metrics(result: EvalResult, out_dir: Path) -> Path:
    path = out_dir / "metrics.json"
    atomic_write_text(path, json.dumps(result.to_json(), indent=1))
    result.files["metrics"] = str(path)
    return path


def _settings_table(settings: Mapping[str, Any]) -> list[str]:
    lines = ["| setting | value |", "|---|---|"]
    for key, value in settings.items():
        if key == "prompts" and isinstance(value, list):
            text = f"{len(value)} prompt(s); first: `{value[0][:150]}{'...' if len(value[0]) > 150 else ''}`"
        elif isinstance(value, dict | list):
            text = json.dumps(value)[:200]
        else:
            text = str(value)
        lines.append(f"| {key} | {text.replace('|', '/')} |")
    return lines


def write_summary(
    result: EvalResult,
    out_dir: Path,
    metric_rows: Sequence[tuple[str, str]],
    table: tuple[Sequence[str], Sequence[Sequence[str]]] | None,
    table_title: str = "Per category",
) -> Path:
    """summary.md: settings, headline metrics (percent), a per-row table and the plots written so far."""
    lines = [f"# Evaluation: {result.task}", ""]
    lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in metric_rows]
    lines += ["", "Values in percent (n/a: undefined, e.g. no ground truth of that size).", ""]
    if table is not None and table[1]:
        header, rows = table
        lines += [f"## {table_title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
        lines.append("")
    plots = [(k, v) for k, v in result.files.items() if v.endswith(".png")]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{kind}]({Path(path).name})" for kind, path in plots]
        lines.append("")
    lines += ["## Settings", ""] + _settings_table(result.settings) + [""]
    path = out_dir / "summary.md"
    atomic_write_text(path, "\n".join(lines))
    result.files["summary"] = str(path)
    return path


# --------------------------------------------------------------------------------------------- plots


def plot_pr_curves(curves: Mapping[str, Any], path: Path, title: str = "") -> bool:
    """Precision (mean over categories) vs recall, one curve per IoU threshold."""
    figure = _figure(7, 5)
    if figure is None:
        return False
    axes = figure.add_subplot(1, 1, 1)
    recall = curves["rec_thrs"]
    count = len(curves["iou_thrs"])
    for index, (iou, precision) in enumerate(zip(curves["iou_thrs"], curves["precision"])):
        shade = index / max(count - 1, 1)
        axes.plot(
            recall, precision, color=(0.1 + 0.8 * shade, 0.3, 0.9 - 0.8 * shade), label=f"IoU {iou:.2f}"
        )
    axes.set_xlabel("recall")
    axes.set_ylabel("precision (mean over categories)")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2, loc="upper right")
    axes.set_title(title or "Precision-recall per IoU threshold (area all)")
    figure.tight_layout()
    atomic_save(path, lambda handle: figure.savefig(handle, format="png"))
    return True


def plot_bars(
    labels: Sequence[str],
    values: Sequence[float],
    path: Path,
    title: str,
    xlabel: str,
    highlight: int | None = None,
) -> bool:
    """Horizontal bars (values as fractions, shown in percent)."""
    figure = _figure(8, max(2.5, 0.28 * len(labels) + 1.2))
    if figure is None:
        return False
    axes = figure.add_subplot(1, 1, 1)
    shown = [100 * v if v is not None and v >= 0 else 0.0 for v in values]
    colors = ["#d9822b" if i == highlight else "#3b75af" for i in range(len(labels))]
    positions = list(range(len(labels)))[::-1]
    axes.barh(positions, shown, color=colors)
    axes.set_yticks(positions)
    axes.set_yticklabels([str(label)[:40] for label in labels], fontsize=7)
    right = max(shown + [1.0]) * 1.15
    for y, value, raw in zip(positions, shown, values):
        text = "n/a" if raw is None or raw < 0 else f"{value:.1f}"
        axes.text(value + 0.01 * right, y, text, va="center", fontsize=6)
    axes.set_xlim(0, right)
    axes.set_xlabel(xlabel)
    axes.set_title(title)
    figure.tight_layout()
    atomic_save(path, lambda handle: figure.savefig(handle, format="png"))
    return True


def plot_category_ap(rows: Sequence[Mapping[str, Any]], path: Path, limit: int = 50) -> bool:
    """AP per category (sorted); with more than ``limit`` categories the best and worst ``limit // 2``."""
    defined = [r for r in rows if r.get("AP") is not None and r["AP"] >= 0]
    if not defined:
        return False
    ordered = sorted(defined, key=lambda r: -r["AP"])
    title = f"AP per category ({len(defined)} with ground truth)"
    if len(ordered) > limit:
        half = limit // 2
        ordered = ordered[:half] + ordered[-half:]
        title += f": best and worst {half}"
    labels = [f"{r['name']} ({r['id']})" for r in ordered]
    return plot_bars(labels, [r["AP"] for r in ordered], path, title, "AP (%)")


# ------------------------------------------------------------------------------------------ examples


def _fit(image: Image.Image) -> tuple[Image.Image, float]:
    scale = min(TILE / image.width, TILE / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.BILINEAR), scale


def _label(
    draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, rgb: tuple[int, int, int], font: Any
) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x, y = xy
    draw.rectangle([x, y, x + right - left + 4, y + bottom - top + 4], fill=rgb)
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    draw.text(
        (x + 2 - left, y + 2 - top), text, fill=(0, 0, 0) if luminance > 140 else (255, 255, 255), font=font
    )


def render_tile(
    image: Image.Image,
    title: str,
    gt: Sequence[tuple[Sequence[float], str]],
    predictions: Sequence[tuple[Sequence[float], str, float | None, int]],
) -> Image.Image:
    """One example: the image scaled to fit a TILE square, GT boxes (green, label below the top edge)
    and predictions (colour per label, "name score" above), and a title bar."""
    fitted, scale = _fit(image.convert("RGB"))
    font = _font(11)
    canvas = Image.new("RGB", (TILE, TILE + 34), (250, 250, 250))
    offset = ((TILE - fitted.width) // 2, 34 + (TILE - fitted.height) // 2)
    canvas.paste(fitted, offset)
    draw = ImageDraw.Draw(canvas)
    for line, text in enumerate(_wrap(title, 58)[:2]):
        draw.text((4, 3 + 14 * line), text, fill=(20, 20, 20), font=font)

    def place(box: Sequence[float]) -> list[float]:
        return [
            offset[0] + box[0] * scale,
            offset[1] + box[1] * scale,
            offset[0] + box[2] * scale,
            offset[1] + box[3] * scale,
        ]

    for box, name in gt:
        xy = place(box)
        draw.rectangle(xy, outline=GT_COLOR, width=3)
        _label(draw, (xy[0], min(xy[3] - 14, offset[1] + fitted.height - 14)), f"GT {name}", GT_COLOR, font)
    for box, name, score, key in predictions:
        xy = place(box)
        rgb = color(key)
        draw.rectangle(xy, outline=rgb, width=2)
        text = name if score is None else f"{name} {score:.2f}"
        _label(draw, (xy[0], max(offset[1], xy[1] - 15)), text, rgb, font)
    return canvas


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


def save_grid(tiles: Sequence[Image.Image], path: Path, columns: int = 4) -> bool:
    if not tiles:
        return False
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    width, height = tiles[0].size
    grid = Image.new(
        "RGB", (columns * width + (columns - 1) * 6, rows * height + (rows - 1) * 6), (255, 255, 255)
    )
    for index, tile in enumerate(tiles):
        grid.paste(tile, ((index % columns) * (width + 6), (index // columns) * (height + 6)))
    atomic_save(path, lambda handle: grid.save(handle, format="PNG"))
    return True


def _detection_tiles(examples: Mapping[str, Any], num_examples: int) -> list[Image.Image]:
    dataset = examples["dataset"]
    image_dir = examples["image_dir"]
    if image_dir is None or num_examples <= 0:
        return []
    gt_by_image: dict[Any, list[dict[str, Any]]] = {}
    for ann in dataset.data["annotations"]:
        gt_by_image.setdefault(ann["image_id"], []).append(ann)
    records = examples["records"]
    preds_by_image: dict[Any, list[tuple[list[float], Any, float]]] = {}
    if records is None:
        extra = 1.0 if examples["plus_one"] else 0.0
        for det in examples["results"]:
            x, y, w, h = det["bbox"]
            box = [x, y, x + w - extra, y + h - extra]
            preds_by_image.setdefault(det["image_id"], []).append((box, det["category_id"], det["score"]))
    ids = [i for i in examples["image_ids"] if gt_by_image.get(i)] or list(examples["image_ids"])
    cat_index = {cat_id: index for index, cat_id in enumerate(dataset.category_ids)}
    tiles = []
    for image_id in ids[:num_examples]:
        where = dataset.where_image(image_id)
        try:
            path = resolve_image_path(Path(image_dir), dataset.images[image_id], where)
            image = load_eval_image(path, where)
        except EvalError as exc:
            logger.warning("examples: %s", exc)
            continue
        gt = [
            (
                [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]],
                dataset.categories[a["category_id"]],
            )
            for a in gt_by_image.get(image_id, [])
        ]
        if records is not None:
            record = records.get(image_id, {"boxes": [], "scores": [], "labels": []})
            preds = list(zip(record["boxes"], record["labels"], record["scores"]))
        else:
            preds = preds_by_image.get(image_id, [])
        preds = sorted(preds, key=lambda p: -p[2])[: min(10, max(3, len(gt)))]
        shown = [
            (box, dataset.categories.get(cat, str(cat)), score, cat_index.get(cat, 0))
            for box, cat, score in preds
        ]
        title = f"{Path(str(dataset.images[image_id].get('file_name') or image_id)).name}: {len(gt)} GT, top {len(shown)} predictions"
        tiles.append(render_tile(image, title, gt, shown))
    return tiles


# ------------------------------------------------------------------------------------------- reports


def write_detection_report(
    result: EvalResult, out_dir: str | Path, examples: Mapping[str, Any] | None, num_examples: int = 8
) -> dict[str, str]:
    """metrics.json, summary.md, pr_curves.png, category_ap.png and examples.png of a detection result."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if result.curves is not None and plot_pr_curves(result.curves, out / "pr_curves.png"):
        result.files["pr_curves"] = str(out / "pr_curves.png")
    if plot_category_ap(result.per_category, out / "category_ap.png"):
        result.files["category_ap"] = str(out / "category_ap.png")
    if examples is not None and save_grid(_detection_tiles(examples, num_examples), out / "examples.png"):
        result.files["examples"] = str(out / "examples.png")
    names = [k for k, v in result.metrics.items() if isinstance(v, float)]
    metric_rows = [(name, _pct(result.metrics[name])) for name in names]
    has_freq = any("frequency" in r for r in result.per_category)
    header = ["id", "name"] + (["freq"] if has_freq else []) + ["GT", "detections", "AP", "AP50", "AP75"]
    rows = [
        [r["id"], r["name"]]
        + ([r.get("frequency", "")] if has_freq else [])
        + [r["num_gt"], r["num_detections"], _pct(r["AP"]), _pct(r["AP50"]), _pct(r["AP75"])]
        for r in result.per_category
    ]
    write_metrics(result, out)
    write_summary(result, out, metric_rows, (header, rows))
    return result.files


def write_flickr_report(
    result: EvalResult,
    out_dir: Path,
    dataset: Any,
    image_dir: Path | None,
    ranked: Mapping[Any, Sequence[Sequence[Sequence[float]]]],
    num_examples: int = 8,
) -> dict[str, str]:
    """metrics.json, summary.md, recall.png and examples.png (GT per phrase vs its best box)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = result.metrics
    ks = [name.split("_", 1)[1] for name in metrics if name.startswith("anybox_")]
    labels, values = [], []
    for protocol in ("anybox", "merged"):
        for k in ks:
            labels.append(f"{protocol} {k}")
            values.append(metrics[f"{protocol}_{k}"])
    if plot_bars(labels, values, out / "recall.png", "Flickr30K Entities phrase grounding", "recall (%)"):
        result.files["recall"] = str(out / "recall.png")
    tiles = []
    if image_dir is not None:
        for key in dataset.keys[:num_examples]:
            sentence = dataset.sentences[key]
            try:
                path = resolve_image_path(Path(image_dir), sentence.record, sentence.where)
                image = load_eval_image(path, sentence.where)
            except EvalError as exc:
                logger.warning("examples: %s", exc)
                continue
            names = sentence.phrase_texts
            gt = [(box, names[j]) for j, boxes in enumerate(sentence.boxes) for box in boxes]
            best = [
                (boxes[0], f"top-1 {names[j]}", None, j)
                for j, boxes in enumerate(ranked.get(key, []))
                if boxes
            ]
            tiles.append(render_tile(image, sentence.caption, gt, best))
    if save_grid(tiles, out / "examples.png"):
        result.files["examples"] = str(out / "examples.png")
    header = ["protocol"] + ks
    rows = [[p] + [_pct(metrics[f"{p}_{k}"]) for k in ks] for p in ("anybox", "merged")]
    metric_rows = [(n, _pct(v) if isinstance(v, float) else str(v)) for n, v in metrics.items()]
    write_metrics(result, out)
    write_summary(result, out, metric_rows, (header, rows), table_title="Recall by protocol")
    return result.files


def write_odinw_report(result: EvalResult, out_dir: Path) -> dict[str, str]:
    """metrics.json, summary.md and odinw_ap.png (AP per dataset and their average)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = result.per_category
    labels = [r["name"] for r in rows] + ["average"]
    values = [r["AP"] for r in rows] + [result.metrics["AP_avg"]]
    if plot_bars(
        labels, values, out / "odinw_ap.png", "ODinW: AP per dataset", "AP (%)", highlight=len(rows)
    ):
        result.files["odinw_ap"] = str(out / "odinw_ap.png")
    header = ["dataset", "images", "categories", "AP", "AP50", "AP75", "report"]
    table = [
        [
            r["name"],
            r["num_images"],
            r["num_categories"],
            _pct(r["AP"]),
            _pct(r["AP50"]),
            _pct(r["AP75"]),
            f"{r['name']}/summary.md",
        ]
        for r in rows
    ]
    table.append(
        ["**average**", "", "", _pct(result.metrics["AP_avg"]), _pct(result.metrics["AP50_avg"]), "", ""]
    )
    metric_rows = [
        ("AP (average over datasets)", _pct(result.metrics["AP_avg"])),
        ("AP50 (average)", _pct(result.metrics["AP50_avg"])),
    ]
    write_metrics(result, out)
    write_summary(result, out, metric_rows, (header, table), table_title="Datasets")
    return result.files


# ------------------------------------------------------------------------------------------- training


TRAINING_CURVES_FILE = "training_curves.png"


def read_metrics_log(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``metrics.jsonl`` of ``glip train`` -> (training records, evaluation records), each sorted by step.

    Training records hold ``loss`` (and its parts ``loss_*``) and ``lr``; evaluation records ``eval/*``.
    A step logged twice (a resumed run) keeps its last record; lines that are not JSON objects with a
    ``step`` are skipped with one warning naming their count.
    """
    train: dict[int, dict[str, Any]] = {}
    evals: dict[int, dict[str, Any]] = {}
    bad = 0
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, TypeError, KeyError):
            bad += 1
            continue
        if any(key.startswith("eval/") for key in record):
            evals[step] = {**evals.get(step, {}), **record}
        elif "loss" in record:
            train[step] = record
        else:
            bad += 1
    if bad:
        logger.warning("%s: %d line(s) skipped (not a training or evaluation record)", path, bad)
    return [train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)]


def plot_training_curves(metrics_path: str | Path, out_path: str | Path | None = None) -> Path | None:
    """Plot a training log (``metrics.jsonl``): the loss and each of its parts, and the learning rate,
    against the optimiser step (plus the evaluation metrics when the run evaluated).

    Args:
        metrics_path: the ``metrics.jsonl`` :func:`glip.engine.train.fit` writes.
        out_path: the PNG (default ``training_curves.png`` beside ``metrics_path``), written atomically.

    Returns:
        The PNG's path, or None when there is nothing to plot (no training record) or no matplotlib.
    """
    from glip.fileio import atomic_save

    metrics_path = Path(metrics_path)
    train, evals = read_metrics_log(metrics_path)
    if not train:
        return None
    eval_keys = sorted({k for r in evals for k, v in r.items() if k.startswith("eval/") and _is_number(v)})
    panels = 3 if eval_keys else 2
    figure = _figure(7, 2.6 * panels)
    if figure is None:
        return None
    steps = [r["step"] for r in train]
    loss_keys = ["loss"] + sorted({k for r in train for k in r if k.startswith("loss_") and _is_number(r[k])})
    axes = figure.add_subplot(panels, 1, 1)
    for index, key in enumerate(loss_keys):
        points = [(r["step"], r[key]) for r in train if _is_number(r.get(key))]
        axes.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            label=key,
            color="black" if key == "loss" else tuple(c / 255 for c in color(index)),
            linewidth=2.0 if key == "loss" else 1.2,
        )
    axes.set_ylabel("loss (mean per logged window)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper right")
    axes.set_title(f"Training curves: {metrics_path.parent.name or metrics_path.parent}")
    lr_axes = figure.add_subplot(panels, 1, 2, sharex=axes)
    rates = [(r["step"], r["lr"]) for r in train if _is_number(r.get("lr"))]
    lr_axes.plot([p[0] for p in rates], [p[1] for p in rates], color=(0.2, 0.4, 0.8))
    positive = [p[1] for p in rates if p[1] > 0]
    if positive and max(positive) / min(positive) > 20:
        lr_axes.set_yscale("log")
    lr_axes.set_ylabel("learning rate")
    lr_axes.grid(alpha=0.3)
    if eval_keys:
        eval_axes = figure.add_subplot(panels, 1, 3, sharex=axes)
        for index, key in enumerate(eval_keys[:8]):
            points = [(r["step"], r[key]) for r in evals if _is_number(r.get(key))]
            eval_axes.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker="o",
                label=key.removeprefix("eval/"),
                color=tuple(c / 255 for c in color(index)),
            )
        eval_axes.set_ylabel("evaluation")
        eval_axes.grid(alpha=0.3)
        eval_axes.legend(fontsize=7, loc="lower right")
    figure.axes[-1].set_xlabel(f"optimiser step (last {steps[-1]})")
    figure.tight_layout()
    target = Path(out_path) if out_path is not None else metrics_path.parent / TRAINING_CURVES_FILE
    atomic_save(target, lambda handle: figure.savefig(handle, format="png"))
    return target


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
