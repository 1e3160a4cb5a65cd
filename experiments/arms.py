"""Shared pieces of the miniature-claim experiments: synthetic worlds, data subsets, one training arm, evaluation.

Every arm trains the ``tiny`` preset (ImageNet EfficientNet-Lite0 + frozen MiniLM) with
``glip.engine.train.fit`` and the demo model's recipe (AdamW lr 2e-4, cosine, 200x learning rate on the grounding
score's text projection and temperature, 192 px images: see docs/reproduction.md section 2), and is evaluated with ``glip.eval``.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
WORLDS = REPO / "outputs" / "worlds"
#: the grounding score's text projection and temperature: trained at ``score_lr_factor`` x the rate
SCORE_PARAMS = ("head.text_proj", "head.log_scale")
#: the demo model's recipe (experiments/demo_model.py defaults): grounding data's share next to detection 1.0,
#: and the backbone's stem + first two blocks frozen. Claims 1 and 3 ran before (no frozen stages, own mixes).
DEMO_GROUNDING_WEIGHT = 0.25
DEMO_FROZEN_STAGES = 2


def world(split: str, num_images: int, seed: int) -> Path:
    """The synthetic world ``glip synth --split SPLIT --num-images N --seed S``, generated once and cached."""
    from glip.data.synthetic.writers import generate

    folder = WORLDS / f"{split}_seed{seed}_n{num_images}"
    if not (folder / "README.txt").exists():
        generate(folder, num_images=num_images, seed=seed, split=split, overwrite=True)
    return folder


def demo_v2_train_world(num_images: int = 2000) -> Path:
    """The world the GLIPv2 demo model trained on (``make demo-model-v2`` leaves it in its work folder,
    ``glip synth --split train --seed 0 --masks``, 2000 images), else that world without masks, generated
    once (``num_images`` images) and cached beside the others."""
    made = REPO / "outputs" / "demo_model_v2" / "synth_train"
    return made if (made / "detection.json").exists() else world("train", num_images, 0)


def subset(
    source: Path, image_ids: set[int] | None, target: Path, categories: set[str] | None = None
) -> Path:
    """A COCO / MDETR file restricted to some images (and, for COCO, to some category names)."""
    data = json.loads(source.read_text())
    if image_ids is not None:
        data["images"] = [im for im in data["images"] if im["id"] in image_ids]
    keep_images = {im["id"] for im in data["images"]}
    annotations = [a for a in data["annotations"] if a["image_id"] in keep_images]
    if categories is not None and "categories" in data:
        data["categories"] = [c for c in data["categories"] if c["name"] in categories]
        keep = {c["id"] for c in data["categories"]}
        annotations = [a for a in annotations if a["category_id"] in keep]
    data["annotations"] = annotations
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data))
    return target


def image_ids(source: Path) -> list[int]:
    return sorted(im["id"] for im in json.loads(source.read_text())["images"])


def train_arm(
    name: str,
    parts: list[tuple[Path, Path, float]],
    *,
    work: Path,
    steps: int,
    seed: int,
    batch_size: int = 4,
    lr: float = 2e-4,
    score_lr_factor: float = 200.0,
    head: dict[str, Any] | None = None,
    tune: str = "full",
    init: Any = None,
    shots: int = 0,
    before_fit: Any = None,
    size: int | None = None,
    prompt_options: dict[str, Any] | None = None,
    score_params: tuple[str, ...] = SCORE_PARAMS,
    frozen_stages: int = -1,
) -> tuple[Any, dict[str, Any]]:
    """Train one arm. parts: ``(annotation file, image folder, sampling weight)``; ``head``: HeadConfig changes;
    ``init``: a model to start from (deep-copied) instead of a fresh ``tiny`` (it keeps its own frozen stages);
    ``frozen_stages``: the fresh model's ``EfficientNetConfig.frozen_stages``. Returns (model, summary)."""
    import copy

    from glip.config import get_preset
    from glip.data.build import build_dataset, detect_format
    from glip.data.mixed import MixedDataset
    from glip.data.transforms import TrainTransform
    from glip.engine.train import TrainConfig, fit
    from glip.models.glip import build_model

    torch.manual_seed(seed)
    if init is not None:
        model = copy.deepcopy(init).train()
    else:
        preset = get_preset("tiny")
        if size is not None:  # train and test at one image size (shorter side; longer side <= 1.6x)
            preset = dataclasses.replace(
                preset,
                input=dataclasses.replace(
                    preset.input,
                    min_size=size,
                    max_size=int(size * 1.6),
                    train_min_sizes=(size,),
                    train_max_size=int(size * 1.6),
                ),
            )
        if head:
            preset = dataclasses.replace(preset, head=dataclasses.replace(preset.head, **head))
        preset = dataclasses.replace(
            preset, backbone=dataclasses.replace(preset.backbone, frozen_stages=frozen_stages)
        )
        model = build_model(preset)
    if before_fit is not None:
        before_fit(model)  # e.g. attach an experiment's module (trained with the model)
    transform = TrainTransform.from_config(model.config.input, seed=seed)
    datasets = []
    for i, (ann, images, weight) in enumerate(parts):
        options = prompt_options if detect_format(ann) == "coco" else None
        dataset = build_dataset(
            ann, images, transform, seed=seed, shots=shots if i == 0 else 0, prompt_options=options
        )
        datasets.append((dataset, weight))
    dataset = datasets[0][0] if len(datasets) == 1 else MixedDataset(datasets, seed=seed)
    factors = tuple((prefix, score_lr_factor) for prefix in score_params)
    config = TrainConfig(
        out_dir=str(work / "runs" / name),
        max_steps=steps,
        batch_size=batch_size,
        lr=lr,
        freeze=("text",) if tune == "full" else (),
        tune=tune,
        schedule="cosine",
        warmup_steps=max(1, min(100, steps // 10)),
        seed=seed,
        ckpt_every=0,
        log_every=max(1, steps // 6),
        progress=False,
        lr_factors=factors if tune in ("full", "linear") else (),
    )
    started = time.perf_counter()
    fit(model, dataset, config)
    log = [json.loads(line) for line in (work / "runs" / name / "metrics.jsonl").read_text().splitlines()]
    last = {k: round(v, 4) for k, v in log[-1].items() if k.startswith("loss")} if log else {}
    return model.eval(), {"train_seconds": round(time.perf_counter() - started, 1), "final_losses": last}


def detection_ap(model: Any, ann: Path, images: Path) -> dict[str, float]:
    """Box AP / AP50 overall and per ``concept`` field of the categories (seen, rare, ...)."""
    from glip.eval.coco import evaluate_coco
    from glip.eval.options import EvalOptions

    result = evaluate_coco(model, ann, images, EvalOptions(progress=False, report=False))
    out = {"AP": round(float(result.metrics["AP"]), 4), "AP50": round(float(result.metrics["AP50"]), 4)}
    for concept, values in concept_metrics(result, ann).items():
        out.update({f"{key}_{concept}": value for key, value in values.items() if key != "categories"})
    return out


def concept_metrics(result: Any, ann: Path) -> dict[str, dict[str, float]]:
    """Mean AP / AP50 (and the number of categories) per ``concept`` field of the synthetic categories
    (seen, rare, synonym, task_A, task_B), over the categories present in the ground truth."""
    concepts = {c["id"]: c.get("concept") for c in json.loads(Path(ann).read_text())["categories"]}
    out: dict[str, dict[str, float]] = {}
    for concept in sorted({c for c in concepts.values() if c}):
        rows = [r for r in result.per_category if concepts.get(r["id"]) == concept and r["AP50"] > -1]
        if rows:
            out[concept] = {key: round(sum(r[key] for r in rows) / len(rows), 4) for key in ("AP", "AP50")}
            out[concept]["categories"] = len(rows)
    return out


def grounding_recall(model: Any, ann: Path, images: Path, max_images: int | None = None) -> dict[str, float]:
    """Phrase-grounding Recall@1/5 (Flickr30K Entities protocol, ``glip.eval.evaluate_flickr``)."""
    from glip.eval.flickr import evaluate_flickr
    from glip.eval.options import EvalOptions

    result = evaluate_flickr(
        model, ann, images, EvalOptions(progress=False, report=False, max_images=max_images)
    )
    return {k: round(float(v), 4) for k, v in result.metrics.items() if isinstance(v, float)}


def command_line(script: str, args: Any, skip: tuple[str, ...] = ("work", "out")) -> str:
    """The command that reproduces a run: ``python experiments/SCRIPT --flag value ...`` from its arguments."""
    parts = [f"python experiments/{script}"]
    for key, value in vars(args).items():
        if key in skip or value is None:
            continue
        text = " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        parts.append(f"--{key.replace('_', '-')} {text}")
    return " ".join(parts)


def write_report(out: str | Path, script: str, args: Any, started: float, **sections: Any) -> dict[str, Any]:
    """Write ``{"command", "wall_seconds", **sections}`` as JSON to ``out``, print it, return it."""
    report = {
        "command": command_line(script, args),
        "wall_seconds": round(time.perf_counter() - started, 1),
        **sections,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    return report


def mean_spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "n": len(values),
    }
