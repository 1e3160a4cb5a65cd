"""Miniature claim 5: data efficiency on a held-out task: 0/1/3/5/10-shot and full data, by transfer mode.

    python experiments/data_efficiency.py                    # task_A, 1 seed
    python experiments/data_efficiency.py --task task_B --seeds 0 1 2

The held-out task is a new class set of the synthetic world (``task_A``: four new shapes named by shape only;
``task_B``: three new colours x the seen shapes), generated with a training seed (0) and a test seed (7) never
used by the demo model. Starting from the bundled demo model (``--model``), for each number of shots (k
annotated instances per class, ``glip.data.few_shot``; "full": every training image) and each mode:

* ``full``: full fine-tuning (frozen MiniLM, as the demo model);
* ``prompt``: prompt tuning (only the prompt offset learns, ``--tune prompt``);
* ``linear``: linear probing (only the output layers learn, ``--tune linear``);
* ``scratch``: the ``tiny`` preset from its ImageNet / MiniLM initialisation (no synthetic pre-training),
  fully trained on the same shots;

train ``--steps`` steps and report box AP / AP50 on the task's test images. 0 shots is the zero-shot model
(``scratch`` has no 0-shot entry). Writes ``experiments/results/data_efficiency.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from arms import DEMO_FROZEN_STAGES, REPO, detection_ap, mean_spread, train_arm, world

MODES = ("full", "prompt", "linear", "scratch")
LR = {"full": 2e-4, "prompt": 5e-3, "linear": 2e-4, "scratch": 2e-4}


def plot(summary: dict, path: Path, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, rows in summary.items():
        xs = [0.0 if shots == "0" else (20.0 if shots == "full" else float(shots)) for shots in rows]
        ys = [rows[s]["AP50"]["mean"] for s in rows]
        errs = [rows[s]["AP50"]["std"] for s in rows]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=mode)
    ticks = sorted({0.0, 1.0, 3.0, 5.0, 10.0, 20.0})
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xticks(ticks, ["0", "1", "3", "5", "10", "full"])
    ax.set_xlabel("shots per class")
    ax.set_ylabel("box AP50")
    ax.set_title(f"data efficiency on {task} (synthetic world)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo")
    parser.add_argument("--task", default="task_A", choices=("task_A", "task_B"))
    parser.add_argument("--shots", nargs="+", default=["1", "3", "5", "10", "full"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=192, help="image shorter side (the demo model's)")
    parser.add_argument("--train-images", type=int, default=300)
    parser.add_argument("--test-images", type=int, default=100)
    parser.add_argument("--work", default=str(REPO / "outputs" / "data_efficiency"))
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "data_efficiency.json"))
    args = parser.parse_args()

    from glip.weights.loading import load_model

    started = time.perf_counter()
    work = Path(args.work)
    train, test = world(args.task, args.train_images, 0), world(args.task, args.test_images, 7)
    base = load_model(args.model).eval()
    zero = detection_ap(base, test / "detection.json", test / "images")
    print(json.dumps({"shots": 0, "AP50": zero["AP50"]}), flush=True)
    runs = []
    for seed in args.seeds:
        for shots in args.shots:
            for mode in args.modes:
                k = 0 if shots == "full" else int(shots)
                model, summary = train_arm(
                    f"{args.task}_{mode}_{shots}shot_seed{seed}",
                    [(train / "detection.json", train / "images", 1.0)],
                    work=work,
                    steps=args.steps,
                    size=args.size,
                    seed=seed,
                    lr=LR[mode],
                    tune="full" if mode == "scratch" else mode,
                    init=None if mode == "scratch" else base,
                    shots=k,
                    frozen_stages=DEMO_FROZEN_STAGES,  # the scratch arm's; the others keep the demo model's
                )
                row = {"seed": seed, "shots": shots, "mode": mode, **summary}
                row["test"] = detection_ap(model, test / "detection.json", test / "images")
                runs.append(row)
                print(json.dumps(row), flush=True)
    summary: dict[str, dict[str, dict]] = {}
    for mode in args.modes:
        rows: dict[str, dict] = {}
        if mode != "scratch":
            rows["0"] = {"AP50": mean_spread([zero["AP50"]]), "AP": mean_spread([zero["AP"]])}
        for shots in args.shots:
            chosen = [r["test"] for r in runs if r["mode"] == mode and r["shots"] == shots]
            rows[shots] = {key: mean_spread([c[key] for c in chosen]) for key in ("AP50", "AP")}
        summary[mode] = rows
    out = Path(args.out)
    report = {
        "command": f"python experiments/data_efficiency.py --model {args.model} --task {args.task} --seeds "
        + " ".join(map(str, args.seeds))
        + f" --steps {args.steps} --train-images {args.train_images} --test-images {args.test_images}",
        "learning_rates": LR,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "zero_shot": zero,
        "summary": summary,
        "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(summary, out.with_suffix(".png"), args.task)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
