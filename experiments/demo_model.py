"""Train the bundled demo model: the `tiny` preset on the synthetic world, <= 30 minutes on 2 CPU cores.

    python experiments/demo_model.py            # or: make demo-model

Seeded and reproducible (same machine, same package versions). Steps:
1. generate the training world (``glip synth --split train``) and a held-out test world (``--split test``);
2. train the ``tiny`` preset (ImageNet EfficientNet-Lite0 + frozen MiniLM text encoder) on detection +
   grounding data mixed 1:0.25 with ``glip.engine.train.fit``, at 192 px, the backbone's stem + first two
   blocks frozen, AdamW lr 2e-4 (cosine), with a 200x
   learning rate on the grounding score's text projection and temperature (``TrainConfig.lr_factors``: without
   it every class name keeps the same score for thousands of steps, see docs/reproduction.md section 2);
3. save it without the frozen text encoder, in fp16, to ``glip/assets/demo_model/`` (it reloads MiniLM from
   its package);
4. evaluate box AP on the test world with ``glip.eval`` and write ``experiments/results/demo_model.json``;
5. copy a few test images to ``glip/assets/examples/`` for ``glip demo``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default=str(REPO / "outputs" / "demo_model"))
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--steps", type=int, default=3100)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "glip" / "assets" / "demo_model"))
    parser.add_argument(
        "--grounding-weight",
        type=float,
        default=0.25,
        help="grounding data's sampling weight next to detection's 1.0 (0: detection only)",
    )
    parser.add_argument(
        "--fused-text-score",
        type=int,
        default=1,
        help="1: score against the fused text (official); 0: against the frozen encoder's token features",
    )
    parser.add_argument(
        "--score-lr-factor",
        type=float,
        default=200.0,
        help="learning-rate factor of the grounding score's text projection and temperature (see the docs)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=192,
        help="train and run at this shorter side (0: the tiny preset's 288-352 / 320)",
    )
    parser.add_argument(
        "--frozen-stages",
        type=int,
        default=2,
        help="freeze the backbone's stem and first k blocks (-1: nothing; EfficientNetConfig.frozen_stages)",
    )
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="only evaluate the model in --out (all names, and the seen names alone in the prompt) and write "
        "experiments/results/demo_model_eval.json",
    )
    args = parser.parse_args()

    from glip.config import get_preset
    from glip.data.build import build_dataset
    from glip.data.mixed import MixedDataset
    from glip.data.synthetic.writers import generate
    from glip.data.transforms import TrainTransform
    from glip.engine.train import TrainConfig, fit
    from glip.eval.coco import evaluate_coco
    from glip.eval.options import EvalOptions
    from glip.models.glip import build_model
    from glip.weights.loading import load_model, save_model

    work = Path(args.work)
    started = time.perf_counter()
    train_dir, test_dir = work / "synth_train", work / "synth_test"
    if not (train_dir / "detection.json").exists():
        generate(train_dir, num_images=args.train_images, seed=args.seed, split="train")
    if not (test_dir / "detection.json").exists():
        generate(test_dir, num_images=args.test_images, seed=args.seed, split="test")
    generate_seconds = time.perf_counter() - started  # ~0 when the worlds exist already

    if args.evaluate_only:
        evaluate_only(Path(args.out), test_dir)
        return

    torch.manual_seed(args.seed)
    preset = get_preset("tiny")
    preset = dataclasses.replace(
        preset,
        head=dataclasses.replace(preset.head, fused_text_for_score=bool(args.fused_text_score)),
        backbone=dataclasses.replace(preset.backbone, frozen_stages=args.frozen_stages),
    )
    if args.image_size:
        size, longest = args.image_size, int(args.image_size * 1.6)
        preset = dataclasses.replace(
            preset,
            input=dataclasses.replace(
                preset.input, min_size=size, max_size=longest, train_min_sizes=(size,), train_max_size=longest
            ),
        )
    model = build_model(preset)
    transform = TrainTransform.from_config(model.config.input, seed=args.seed)
    images = train_dir / "images"
    detection = build_dataset(train_dir / "detection.json", images, transform, seed=args.seed)
    parts = [(detection, 1.0)]
    if args.grounding_weight > 0:
        grounding = build_dataset(train_dir / "grounding.json", images, transform, seed=args.seed)
        parts.append((grounding, args.grounding_weight))
    dataset = MixedDataset(parts, seed=args.seed)
    config = TrainConfig(
        out_dir=str(work / "run"),
        max_steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        freeze=("text",),
        schedule="cosine",
        warmup_steps=min(100, args.steps // 10),
        seed=args.seed,
        ckpt_every=100,
        log_every=25,
        lr_factors=(("head.text_proj", args.score_lr_factor), ("head.log_scale", args.score_lr_factor)),
    )
    fit(model, dataset, config, resume=args.resume)
    train_seconds = time.perf_counter() - started - generate_seconds

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    save_model(model, out, skip_pretrained_text=True, half=True)
    shipped = load_model(out).eval()
    result = evaluate_coco(
        shipped, test_dir / "detection.json", test_dir / "images", EvalOptions(progress=True)
    )
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, float)}
    # the target: AP50 on the seen concepts (the test file also holds the rare ones)
    concepts = {
        c["id"]: c.get("concept") for c in json.loads((test_dir / "detection.json").read_text())["categories"]
    }
    for concept in ("seen", "rare"):
        rows = [r for r in result.per_category if concepts.get(r["id"]) == concept and r["AP50"] > -1]
        for key in ("AP", "AP50"):
            metrics[f"{key}_{concept}"] = sum(r[key] for r in rows) / len(rows) if rows else -1.0
    report = {
        "command": "python experiments/demo_model.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k not in ("work", "out", "resume", "evaluate_only")
        ),
        "train_images": args.train_images,
        "test_images": args.test_images,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "generate_seconds": round(generate_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "weights_mb": round((out / "model.safetensors").stat().st_size / 2**20, 2),
        "test_metrics": metrics,
    }
    results = REPO / "experiments" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "demo_model.json").write_text(json.dumps(report, indent=2))
    examples = REPO / "glip" / "assets" / "examples"
    examples.mkdir(parents=True, exist_ok=True)
    for path in sorted((test_dir / "images").glob("*.png"))[:3]:
        shutil.copy(path, examples / path.name)
    print(json.dumps(report, indent=2))


def evaluate_only(model_dir: Path, test_dir: Path) -> None:
    """AP50 of a saved model on the test world: every name in the prompt, and the 30 seen names alone."""
    from arms import concept_metrics, subset

    from glip.eval.coco import evaluate_coco
    from glip.eval.options import EvalOptions
    from glip.weights.loading import load_model

    model = load_model(model_dir).eval()
    categories = json.loads((test_dir / "detection.json").read_text())["categories"]
    seen = {c["name"] for c in categories if c.get("concept") == "seen"}
    seen_file = subset(test_dir / "detection.json", None, test_dir.parent / "test_seen.json", categories=seen)
    report = {"command": "python experiments/demo_model.py --evaluate-only", "model": str(model_dir)}
    for name, path in (("all_names_in_prompt", test_dir / "detection.json"), ("seen_names_only", seen_file)):
        result = evaluate_coco(model, path, test_dir / "images", EvalOptions(progress=True))
        by_concept = concept_metrics(result, path)["seen"]
        report[name] = {
            "AP50_seen": by_concept["AP50"],
            "AP_seen": by_concept["AP"],
            "per_name_AP50": {r["name"]: round(r["AP50"], 4) for r in result.per_category if "name" in r},
        }
    out = REPO / "experiments" / "results" / "demo_model_eval.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
