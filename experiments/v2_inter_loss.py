"""GLIPv2 claim in miniature: adding L_inter to L_ground improves detection at equal steps.

    python experiments/v2_inter_loss.py                      # default: <= ~15 minutes on 1 CPU thread

Two arms x several seeds, identical except for the loss: ``L_ground`` alone vs ``L_ground + w * L_inter``
(``CriterionConfig.inter_loss_weight``). The ``tiny`` preset (ImageNet EfficientNet-Lite0 + frozen MiniLM text
encoder) is trained with ``glip.engine.train.fit`` on detection data of the synthetic world (``glip synth``,
160 px) restricted to a few colour x shape categories that share colours and shapes (so the words matter);
every prompt holds all of them, shuffled. Box AP / AP50 / AR@100 on the held-out ``test`` split (same
categories) with ``glip.eval.evaluate_coco``. Writes ``experiments/results/v2_inter_loss.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CATEGORIES = "red circle,red square,blue circle,blue square,green circle,green square"


def _subset_coco(source: Path, names: list[str], target: Path) -> Path:
    data = json.loads(source.read_text())
    keep = {c["id"] for c in data["categories"] if c["name"] in names}
    data["categories"] = [c for c in data["categories"] if c["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in keep]
    target.write_text(json.dumps(data))
    return target


def run_arm(
    args: argparse.Namespace, seed: int, inter_weight: float, train_ann: Path, test_ann: Path, work: Path
) -> dict:
    from glip.config import get_preset
    from glip.data.coco import CocoGroundingDataset
    from glip.data.transforms import TrainTransform
    from glip.engine.train import TrainConfig, fit
    from glip.eval.coco import evaluate_coco
    from glip.eval.options import EvalOptions
    from glip.losses.criterion import Criterion, CriterionConfig
    from glip.models.glip import build_model

    config = get_preset("tiny")
    size = args.size
    config = dataclasses.replace(
        config,
        input=dataclasses.replace(
            config.input, min_size=size, max_size=size, train_min_sizes=(size,), train_max_size=size
        ),
    )
    torch.manual_seed(seed)
    model = build_model(config)
    transform = TrainTransform.from_config(model.config.input, seed=seed)
    dataset = CocoGroundingDataset(
        train_ann, work / "train" / "images", transform, num_negatives=-1, seed=seed
    )
    name = f"inter{inter_weight:g}_seed{seed}"
    train_config = TrainConfig(
        out_dir=str(work / "runs" / name),
        max_steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        freeze=("text",),
        schedule="cosine",
        warmup_steps=max(1, args.steps // 10),
        seed=seed,
        ckpt_every=0,
        log_every=max(1, args.steps // 5),
        progress=False,
    )
    started = time.perf_counter()
    fit(model, dataset, train_config, criterion=Criterion(CriterionConfig(inter_loss_weight=inter_weight)))
    train_seconds = time.perf_counter() - started
    model.eval()
    result = evaluate_coco(
        model, test_ann, work / "test" / "images", EvalOptions(progress=False, report=False)
    )
    metrics = {k: round(float(result.metrics[k]), 4) for k in ("AP", "AP50", "AR100")}
    last = [json.loads(x) for x in (Path(train_config.out_dir) / "metrics.jsonl").read_text().splitlines()][
        -1
    ]
    losses = {k: round(v, 4) for k, v in last.items() if k.startswith("loss")}
    return {
        "seed": seed,
        "inter_loss_weight": inter_weight,
        **metrics,
        "final_losses": losses,
        "train_seconds": round(train_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default=str(REPO / "outputs" / "v2_inter_loss"))
    parser.add_argument("--train-images", type=int, default=200)
    parser.add_argument("--test-images", type=int, default=40)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--inter-weight", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--categories", default=DEFAULT_CATEGORIES)
    args = parser.parse_args()

    from glip.data.synthetic.writers import generate

    started = time.perf_counter()
    work = Path(args.work) / f"{args.size}px_{args.train_images}_{args.test_images}"
    names = [n.strip() for n in args.categories.split(",")]
    for split, count in (("train", args.train_images), ("test", args.test_images)):
        if not (work / split / "detection.json").exists():
            generate(work / split, num_images=count, seed=0, size=args.size, split=split)
    train_ann = _subset_coco(work / "train" / "detection.json", names, work / "train_subset.json")
    test_ann = _subset_coco(work / "test" / "detection.json", names, work / "test_subset.json")

    runs = []
    for seed in args.seeds:
        for weight in (0.0, args.inter_weight):
            run = run_arm(args, seed, weight, train_ann, test_ann, work)
            print(json.dumps(run), flush=True)
            runs.append(run)

    def summary(weight: float) -> dict:
        rows = [r for r in runs if r["inter_loss_weight"] == weight]
        out = {}
        for key in ("AP", "AP50", "AR100"):
            values = [r[key] for r in rows]
            out[key] = {
                "mean": round(statistics.mean(values), 4),
                "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            }
        return out

    report = {
        "command": "python experiments/v2_inter_loss.py "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k not in ("work", "categories")
        ),
        "categories": names,
        "settings": {k: v for k, v in vars(args).items() if k != "work"},
        "runs": runs,
        "summary": {"L_ground": summary(0.0), "L_ground + L_inter": summary(args.inter_weight)},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    results = REPO / "experiments" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "v2_inter_loss.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
