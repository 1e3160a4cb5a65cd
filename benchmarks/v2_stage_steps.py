"""Seconds per step of the GLIPv2 recipe's two longest stages (C and E), one code tree or several side by side.

    python benchmarks/v2_stage_steps.py --work outputs/demo_model_v2                     # this checkout
    git worktree add /tmp/base <commit>
    python benchmarks/v2_stage_steps.py --trees /tmp/base . --rounds 2 --out benchmarks/results/v2_stage_steps.json

Runs the first ``--steps`` steps of stage C (from ``WORK/stage_A/model``) and stage E (from
``WORK/stage_C``), exactly as ``experiments/demo_model_v2.py`` sets them up, each in a fresh process of the
given tree (``PYTHONPATH``), alternating the trees ``--rounds`` times so that a change of the machine's speed
hits them alike; prints and writes s/step and the logged losses (equal losses: the same computation) and the
machine's matmul rate before and after. Needs a recipe work folder with stages A and C (``make
demo-model-v2``, or ``--from-stage`` runs of it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys, time, types
from pathlib import Path
tree, stage, steps, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
sys.path[:0] = [tree, tree + "/experiments"]
import torch
import glip
assert glip.__file__.startswith(tree), glip.__file__
from glip.runtime import flush_denormals
flush_denormals()
import demo_model_v2 as recipe
from glip.v2.vl_train import VLTrainConfig, train_vl
from glip.weights.loading import load_model
args = types.SimpleNamespace(train_images=2000, seed=0, vl_size=192, steps_d=0)
if stage == "C":
    model = load_model(work / "stage_A" / "model")
    for module in (model.text_encoder, model.backbone):
        for p in module.parameters():
            p.requires_grad_(False)
    vqa, cap = recipe._vl_models(model, 0)
    data = recipe._vl_data(model, args)
    config = VLTrainConfig(steps=steps, batch_size=4, lr=3e-5, text_lr=0.0, head_lr=1e-3, warmup_steps=50,
                           seed=0, log_every=5)
else:
    model = load_model(work / "stage_C" / "model")
    for p in model.parameters():
        p.requires_grad_(False)
    vqa, cap = recipe._vl_models(model, 0)
    recipe._load_heads(work / "stage_C", vqa, cap)
    data = recipe._vl_data(model, args, 12000)
    config = VLTrainConfig(steps=steps, batch_size=8, head_lr=1e-3, detection_weight=0.0, ground_weight=0.0,
                           warmup_steps=20, seed=2, log_every=5)
start = time.perf_counter()
history = train_vl(model, data, config, vqa=vqa, captioner=cap)
seconds = time.perf_counter() - start
print("RESULT " + json.dumps({"s_per_step": seconds / steps, "losses": [round(r["loss"], 5) for r in history]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--work", default=str(REPO / "outputs" / "demo_model_v2"), help="the recipe's work folder"
    )
    parser.add_argument("--trees", nargs="+", default=[str(REPO)], help="glip checkouts to time")
    parser.add_argument("--stages", nargs="+", default=["C", "E"], choices=["C", "E"])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the JSON here")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "benchmarks"))
    import torch
    from latency import matmul_peak

    from glip.fileio import atomic_write_text
    from glip.runtime import flush_denormals

    flush_denormals()
    trees = [str(Path(t).resolve()) for t in args.trees]
    peaks = [matmul_peak(torch.get_num_threads())]
    runs: dict[str, dict[str, list]] = {t: {s: [] for s in args.stages} for t in trees}
    for _ in range(args.rounds):
        for stage in args.stages:
            for tree in trees:
                env = {**os.environ, "PYTHONPATH": tree}
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-c", PROBE, tree, stage, str(args.steps), args.work],
                    env=env,
                    cwd=tree,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
                if done.returncode or not lines:
                    raise SystemExit(f"{tree} stage {stage} failed:\n{done.stderr[-3000:]}")
                result = json.loads(lines[-1][len("RESULT ") :])
                result["wall_s"] = round(time.perf_counter() - started, 1)
                runs[tree][stage].append(result)
                print(f"{tree} stage {stage}: {result['s_per_step']:.3f} s/step losses {result['losses']}")
    peaks.append(matmul_peak(torch.get_num_threads()))
    report = {
        "work": args.work,
        "steps": args.steps,
        "matmul_peak_start_end": peaks,
        "trees": {
            tree: {
                "commit": subprocess.run(
                    ["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
                ).stdout.strip(),
                **{
                    stage: {
                        "s_per_step_runs": [round(r["s_per_step"], 4) for r in runs[tree][stage]],
                        "s_per_step_min": round(min(r["s_per_step"] for r in runs[tree][stage]), 4),
                        "losses": runs[tree][stage][0]["losses"],
                    }
                    for stage in args.stages
                },
            }
            for tree in trees
        },
    }
    print(json.dumps(report, indent=2))
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
