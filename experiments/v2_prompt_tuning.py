"""GLIPv2 claim (5) in miniature: one set of weights serves several tasks by prompt tuning alone.

    python experiments/v2_prompt_tuning.py     # -> experiments/results/v2_prompt_tuning.json (~25 min, 2 cores)
    python experiments/v2_prompt_tuning.py --steps 20 --train-images 40 --test-images 20 --seeds 0  # smoke run

The bundled GLIPv2 model (``demo_v2``) is loaded once; every task gets its own prompt (``--tune prompt``: a
zero-initialised offset added to the text features, ``head.prompt_offset``, the official
``rpn.tunable_linear``, lr 0.05, weight decay 0.25 as the official recipe) and nothing else moves. The tasks
are detection vocabularies of the synthetic world that the model never trained on as such (ODinW-style: the
same images, other label spaces):

* ``shapes``: every object labelled by its shape alone ("circle", "square", ... 7 names);
* ``colours``: by its colour alone ("red", "green", ... 6 names);
* ``nonce``: the 7 shapes under made-up words ("blicket", "dax", ...): the words carry nothing, so whatever the
  model finds comes from the tuned prompt.

Per task: box AP / AP50 on the ``test`` split of world seed 7 (never trained on) with the plain names
(zero-shot, the offset at zero) and after tuning the prompt on ``--train-images`` images of the training world
(seed 0, the images ``demo_v2`` trained on, relabelled). The SHA-256 of every shared weight (all but the
offset) is taken before and after each task: identical, so the tasks share one set of weights, the claim.
Seeds (``--seeds``, 3 by default: the differences are small) change the tuning's data order, augmentation and
initial state; the zero-shot figures do not depend on them. The report is written after every seed, and a
rerun with the same settings on the same model (same shared-weights digest) keeps the seeds already done.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
NONCE = {
    "circle": "blicket",
    "square": "dax",
    "triangle": "wug",
    "star": "toma",
    "cross": "fep",
    "ring": "zorb",
    "diamond": "kiki",
}
TASKS = {
    "shapes": lambda name: name.split()[-1],
    "colours": lambda name: name.split()[0],
    "nonce": lambda name: NONCE[name.split()[-1]],
}


def relabel(source: Path, target: Path, rename, limit: int | None = None) -> Path:
    """A COCO detection file of ``source`` with every category renamed by ``rename`` (categories that get
    the same name merge), the first ``limit`` images."""
    data = json.loads(source.read_text())
    names = sorted({rename(c["name"]) for c in data["categories"]})
    new_id = {name: i + 1 for i, name in enumerate(names)}
    old_to_new = {c["id"]: new_id[rename(c["name"])] for c in data["categories"]}
    images = data["images"][:limit] if limit else data["images"]
    kept = {im["id"] for im in images}
    annotations = [
        {**a, "category_id": old_to_new[a["category_id"]]}
        for a in data["annotations"]
        if a["image_id"] in kept
    ]
    out = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for n, i in new_id.items()],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out))
    return target


def shared_digest(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer except the tuned prompt offset."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        if name == "head.prompt_offset":
            continue
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def box_ap(model, annotations: Path, images: Path) -> dict[str, float]:
    from glip.eval.coco import evaluate_coco
    from glip.eval.options import EvalOptions
    from glip.predictor import GLIPPredictor

    model.eval()
    result = evaluate_coco(GLIPPredictor(model), annotations, images, EvalOptions(progress=False))
    return {"AP": round(float(result.metrics["AP"]), 4), "AP50": round(float(result.metrics["AP50"]), 4)}


def zero_shot_ap(args, model, task: str, test_world: Path, work: Path) -> dict:
    """Box AP of the plain names (the prompt offset at zero)."""
    rename = TASKS[task]
    test_ann = relabel(test_world / "detection.json", work / task / "test.json", rename, args.test_images)
    model.head.prompt_offset = None
    return box_ap(model, test_ann, test_world / "images")


def run_task(args, model, task: str, seed: int, train_world: Path, test_world: Path, work: Path) -> dict:
    from glip.data.coco import CocoGroundingDataset
    from glip.data.transforms import TrainTransform
    from glip.engine.train import TrainConfig, fit

    rename = TASKS[task]
    train_ann = relabel(train_world / "detection.json", work / task / "train.json", rename, args.train_images)
    test_ann = relabel(test_world / "detection.json", work / task / "test.json", rename, args.test_images)
    head = model.head
    head.prompt_offset = None  # every task starts from no offset
    before = shared_digest(model)
    torch.manual_seed(seed)
    dataset = CocoGroundingDataset(
        train_ann, train_world / "images", TrainTransform.from_config(model.config.input, seed=seed)
    )
    tick = time.perf_counter()
    fit(
        model,
        dataset,
        TrainConfig(
            out_dir=str(work / task / f"run_seed{seed}"),
            max_steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=0.25,
            tune="prompt",
            schedule="cosine",
            warmup_steps=min(20, args.steps // 10),
            seed=seed,
            ckpt_every=0,
            log_every=25,
            progress=False,
        ),
    )
    seconds = time.perf_counter() - tick
    tuned = box_ap(model, test_ann, test_world / "images")
    after = shared_digest(model)
    offset = head.prompt_offset.detach().clone()
    torch.save(offset, work / task / f"prompt_offset_seed{seed}.pt")
    row = {
        "task": task,
        "seed": seed,
        "names": [c["name"] for c in json.loads(test_ann.read_text())["categories"]],
        "prompt_tuned": tuned,
        "tuned_parameters": offset.numel(),
        "tune_seconds": round(seconds, 1),
        "shared_weights_unchanged": before == after,
        "shared_sha256": after,
    }
    print(json.dumps(row), flush=True)
    head.prompt_offset = None
    return row


def summarise(zero_shot: dict[str, dict], rows: list[dict]) -> dict[str, dict]:
    """Per task: zero-shot AP50, the tuned AP50 of each seed, their mean and standard deviation, and in how
    many seeds tuning beat zero-shot."""
    summary = {}
    for task, before in zero_shot.items():
        tuned = [r["prompt_tuned"]["AP50"] for r in rows if r["task"] == task]
        if not tuned:
            continue
        mean = sum(tuned) / len(tuned)
        std = (sum((t - mean) ** 2 for t in tuned) / max(1, len(tuned) - 1)) ** 0.5
        summary[task] = {
            "zero_shot_AP50": before["AP50"],
            "tuned_AP50": tuned,
            "tuned_AP50_mean": round(mean, 4),
            "tuned_AP50_std": round(std, 4),
            "better_in_seeds": sum(t > before["AP50"] for t in tuned),
            "seeds": len(tuned),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", default=str(REPO / "outputs" / "v2_prompt_tuning"))
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "v2_prompt_tuning.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    from arms import demo_v2_train_world, world

    from glip.fileio import atomic_write_text
    from glip.weights.loading import load_model

    work = Path(args.work)
    train_world = demo_v2_train_world(args.train_images)
    test_world = world("test", args.test_images, 7)
    model = load_model(REPO / "glip" / "assets" / "demo_model_v2")
    digest = shared_digest(model)
    settings = {k: v for k, v in vars(args).items() if k not in ("work", "out", "seeds")}
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    reuse = previous.get("settings") == settings and previous.get("shared_sha256") == digest
    zero_shot = previous.get("zero_shot", {}) if reuse else {}
    rows = [r for r in previous.get("runs", []) if r["seed"] in args.seeds] if reuse else []
    done = {(r["seed"], r["task"]) for r in rows}
    if done:
        print(f"kept from {out}: {sorted(done)}", flush=True)

    def report() -> dict:
        return {
            "command": "python experiments/v2_prompt_tuning.py "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items() if k != "tasks")
            + " --seeds "
            + " ".join(str(s) for s in args.seeds),
            "model": "demo_v2",
            "settings": settings,
            "shared_sha256": digest,
            "zero_shot": zero_shot,
            "runs": rows,
            "summary": summarise(zero_shot, rows),
            "one_set_of_shared_weights": all(
                r["shared_weights_unchanged"] and r["shared_sha256"] == digest for r in rows
            ),
        }

    for task in args.tasks:
        if task not in zero_shot:
            zero_shot[task] = zero_shot_ap(args, model, task, test_world, work)
            print(json.dumps({"task": task, "zero_shot": zero_shot[task]}), flush=True)
    for seed in args.seeds:
        for task in args.tasks:
            if (seed, task) in done:
                continue
            rows.append(run_task(args, model, task, seed, train_world, test_world, work))
        # after every seed, atomically: a rerun reads this file back to keep the seeds already done
        atomic_write_text(out, json.dumps(report(), indent=2) + "\n")
    print(json.dumps(report()["summary"], indent=2))


if __name__ == "__main__":
    main()
