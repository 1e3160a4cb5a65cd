"""GLIPv2 claim (1) with the bundled model's recipe: L_inter (+ L_mlm) next to L_ground, at equal steps.

    python experiments/v2_inter_loss_demo.py            # -> experiments/results/v2_inter_loss_demo.json (~27 min)
    python experiments/v2_inter_loss_demo.py --steps 10 --seeds 0 --test-images 20     # smoke run

Stage A of ``experiments/demo_model_v2.py`` (the GLIPv2 demo model's first stage) with and without the GLIPv2
losses: from the GLIP demo model, on the detection + grounding mix (1 : 0.25) of ``glip synth --split train
--seed 0`` (the world ``make demo-model-v2`` generated; 2000 images), lr 5e-5 (20x on the grounding score's text
projection and temperature), cosine, text encoder frozen, batch 4, ``--steps`` steps. Two arms per seed,
identical but for the loss:

* ``L_ground``: the grounding losses alone (``inter_loss_weight = mlm_loss_weight = 0``);
* ``L_ground + L_inter + L_mlm``: the demo model's weights (0.5, 0.1).

Measured on the ``test`` split of world seed 7 (never trained on): box AP / AP50 on the seen names (every name
in the prompt, as ``experiments/v2_targets.py``) and phrase-grounding Recall@1 / 5 of the test captions' phrases
(the Flickr30K Entities protocol, ``glip.eval.evaluate_flickr``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

ARMS = {"L_ground": (0.0, 0.0), "L_ground + L_inter + L_mlm": (0.5, 0.1)}


def run_arm(args, arm: str, seed: int, train_dir: Path, test_dir: Path, work: Path) -> dict:
    from arms import concept_metrics, grounding_recall
    from demo_model_v2 import _mixture

    from glip.engine.train import TrainConfig, fit
    from glip.eval.coco import evaluate_coco
    from glip.eval.options import EvalOptions
    from glip.losses.criterion import Criterion, CriterionConfig
    from glip.predictor import GLIPPredictor
    from glip.weights.loading import load_model

    inter, mlm = ARMS[arm]
    torch.manual_seed(seed)
    model = load_model(args.base)
    dataset = _mixture(model, train_dir, seed)
    tick = time.perf_counter()
    fit(
        model,
        dataset,
        TrainConfig(
            out_dir=str(work / f"{'inter' if inter else 'ground'}_seed{seed}"),
            max_steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            freeze=("text",),
            schedule="cosine",
            warmup_steps=min(50, args.steps // 10),
            seed=seed,
            ckpt_every=0,
            log_every=25,
            progress=False,
            lr_factors=(("head.text_proj", 20.0), ("head.log_scale", 20.0)),
        ),
        criterion=Criterion(CriterionConfig(inter_loss_weight=inter, mlm_loss_weight=mlm)),
    )
    seconds = time.perf_counter() - tick
    model.eval()
    ann = test_dir / "detection.json"
    result = evaluate_coco(GLIPPredictor(model), ann, test_dir / "images", EvalOptions(progress=False))
    seen = concept_metrics(result, ann)["seen"]
    recall = grounding_recall(model, test_dir / "grounding.json", test_dir / "images")
    row = {
        "arm": arm,
        "seed": seed,
        "inter_loss_weight": inter,
        "mlm_loss_weight": mlm,
        "box_AP_seen": seen["AP"],
        "box_AP50_seen": seen["AP50"],
        "grounding_R@1": recall["anybox_R@1"],
        "grounding_R@5": recall["anybox_R@5"],
        "train_seconds": round(seconds, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default=str(REPO / "glip" / "assets" / "demo_model"), help="the GLIP model")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test-images", type=int, default=100)
    parser.add_argument("--work", default=str(REPO / "outputs" / "v2_inter_loss_demo"))
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "v2_inter_loss_demo.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    from arms import command_line, demo_v2_train_world, world

    work = Path(args.work)
    train_dir = demo_v2_train_world()
    test_dir = world("test", args.test_images, 7)
    started = time.perf_counter()
    rows = [run_arm(args, arm, seed, train_dir, test_dir, work) for seed in args.seeds for arm in ARMS]

    def summary(arm: str) -> dict:
        mine = [r for r in rows if r["arm"] == arm]
        out = {}
        for key in ("box_AP_seen", "box_AP50_seen", "grounding_R@1", "grounding_R@5"):
            values = [r[key] for r in mine]
            out[key] = {
                "mean": round(statistics.mean(values), 4),
                "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            }
        return out

    by_seed = {
        key: sum(
            1
            for seed in args.seeds
            if [r[key] for r in rows if r["seed"] == seed and r["inter_loss_weight"] > 0][0]
            > [r[key] for r in rows if r["seed"] == seed and r["inter_loss_weight"] == 0][0]
        )
        for key in ("box_AP50_seen", "grounding_R@1")
    }
    report = {
        "command": command_line("v2_inter_loss_demo.py", args, skip=("work", "out", "base")),
        "runs": rows,
        "summary": {arm: summary(arm) for arm in ARMS},
        "seeds_where_inter_is_higher": by_seed,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
