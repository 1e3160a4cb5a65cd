"""GLIPv2 claim (5) in miniature: one set of weights serves several tasks by prompt tuning alone.

    python experiments/v2_prompt_tuning.py            # -> experiments/results/v2_prompt_tuning.json (~12 min, 2 cores)
    python experiments/v2_prompt_tuning.py --steps 20 --train-images 40 --test-images 20   # smoke run

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


def run_task(args, model, task: str, train_world: Path, test_world: Path, work: Path) -> dict:
    from glip.data.coco import CocoGroundingDataset
    from glip.data.transforms import TrainTransform
    from glip.engine.train import TrainConfig, fit

    rename = TASKS[task]
    train_ann = relabel(train_world / "detection.json", work / task / "train.json", rename, args.train_images)
    test_ann = relabel(test_world / "detection.json", work / task / "test.json", rename, args.test_images)
    head = model.head
    head.prompt_offset = None  # zero-shot: no offset
    before = shared_digest(model)
    zero_shot = box_ap(model, test_ann, test_world / "images")
    torch.manual_seed(args.seed)
    dataset = CocoGroundingDataset(
        train_ann, train_world / "images", TrainTransform.from_config(model.config.input, seed=args.seed)
    )
    tick = time.perf_counter()
    fit(
        model,
        dataset,
        TrainConfig(
            out_dir=str(work / task / "run"),
            max_steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=0.25,
            tune="prompt",
            schedule="cosine",
            warmup_steps=min(20, args.steps // 10),
            seed=args.seed,
            ckpt_every=0,
            log_every=25,
            progress=False,
        ),
    )
    seconds = time.perf_counter() - tick
    tuned = box_ap(model, test_ann, test_world / "images")
    after = shared_digest(model)
    offset = head.prompt_offset.detach().clone()
    torch.save(offset, work / task / "prompt_offset.pt")
    row = {
        "task": task,
        "names": [c["name"] for c in json.loads(test_ann.read_text())["categories"]],
        "zero_shot": zero_shot,
        "prompt_tuned": tuned,
        "tuned_parameters": offset.numel(),
        "tune_seconds": round(seconds, 1),
        "shared_weights_unchanged": before == after,
        "shared_sha256": after,
    }
    print(json.dumps(row), flush=True)
    head.prompt_offset = None
    return row


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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=str(REPO / "outputs" / "v2_prompt_tuning"))
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "v2_prompt_tuning.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    from arms import demo_v2_train_world, world

    from glip.weights.loading import load_model

    work = Path(args.work)
    train_world = demo_v2_train_world(args.train_images)
    test_world = world("test", args.test_images, 7)
    model = load_model(REPO / "glip" / "assets" / "demo_model_v2")
    digests = set()
    rows = []
    for task in args.tasks:
        row = run_task(args, model, task, train_world, test_world, work)
        digests.add(row["shared_sha256"])
        rows.append(row)
    report = {
        "command": "python experiments/v2_prompt_tuning.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("work", "out", "tasks")
        ),
        "model": "demo_v2",
        "tasks": rows,
        "one_set_of_shared_weights": len(digests) == 1 and all(r["shared_weights_unchanged"] for r in rows),
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({r["task"]: (r["zero_shot"]["AP50"], r["prompt_tuned"]["AP50"]) for r in rows}))


if __name__ == "__main__":
    main()
