"""Miniature claim 6: self-training: a teacher grounds caption-only images, the student beats it on rare concepts.

    python experiments/self_training.py                    # teacher: the bundled demo model, 1 seed
    python experiments/self_training.py --seeds 0 1 2

1. Teacher: ``--teacher`` (default the bundled demo model, trained on detection + grounding data of the
   ``train`` world, seed 0).
2. Pseudo-labels: ``glip pseudo-label`` (glip/selftrain: noun phrases of each caption, grounded by the
   teacher, confidence > 0.5) on the caption-only pairs (``captions.jsonl``) of ``--captions-images`` images
   of another ``train`` world (seed 11, never seen by the teacher). Their precision / recall against the
   hidden ground truth is measured with ``glip.selftrain.scoring``.
3. Two arms trained from the teacher for the same number of steps with the demo recipe (arms.py):
   ``teacher+human``: more steps on the human data only (detection + grounding of the teacher's world: the
   control for the extra steps); ``student``: the same human data (detection + grounding 1 : 0.25, the demo
   recipe) and the pseudo-labels at the same total weight (half of the batches).
4. Box AP50 on the seen and on the rare names (concepts only mentioned in grounding captions) of the held-out
   ``test`` world (seed 7), for the teacher and both arms.

The paper trains its student from scratch on far more data; continuing from the teacher is the CPU-budget
version (said in docs/reproduction.md). Writes ``experiments/results/self_training.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from arms import DEMO_GROUNDING_WEIGHT, REPO, detection_ap, mean_spread, train_arm, world, write_report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--size", type=int, default=192, help="image shorter side (the demo model's)")
    parser.add_argument("--captions-images", type=int, default=600)
    parser.add_argument("--train-images", type=int, default=2000, help="the teacher's world (human data)")
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--work", default=str(REPO / "outputs" / "self_training"))
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "self_training.json"))
    args = parser.parse_args()

    from glip.selftrain.scoring import score_pseudo_labels
    from glip.weights.loading import load_model

    started = time.perf_counter()
    work = Path(args.work)
    human = world("train", args.train_images, 0)
    web = world("train", args.captions_images, 11)
    test = world("test", args.test_images, 7)
    pseudo = work / f"pseudo_t{args.threshold:g}_n{args.captions_images}.jsonl"
    if not pseudo.exists():
        command = [
            sys.executable,
            "-m",
            "glip.cli",
            "pseudo-label",
            "--teacher",
            args.teacher,
            "--captions",
            str(web / "captions.jsonl"),
            "--images",
            str(web / "images"),
            "--out",
            str(pseudo),
            "--threshold",
            str(args.threshold),
            "--resume",
        ]
        subprocess.run(command, check=True)
    quality = score_pseudo_labels(pseudo, web / "captions_gt.json")
    quality = {k: v for k, v in quality.items() if isinstance(v, (int, float))}
    print(json.dumps({"pseudo_labels": quality}), flush=True)

    teacher = load_model(args.teacher).eval()
    report_rows: dict[str, list[dict]] = {"teacher": [], "teacher+human": [], "student": []}
    teacher_test = detection_ap(teacher, test / "detection.json", test / "images")
    report_rows["teacher"].append({"test": teacher_test})
    images = human / "images"
    human_parts = [
        (human / "detection.json", images, 1.0),
        (human / "grounding.json", images, DEMO_GROUNDING_WEIGHT),
    ]
    human_weight = sum(weight for _, _, weight in human_parts)
    for seed in args.seeds:
        arms = {  # the student: half of its batches pseudo-labelled
            "teacher+human": human_parts,
            "student": [*human_parts, (pseudo, web / "images", human_weight)],
        }
        for arm, parts in arms.items():
            model, summary = train_arm(
                f"{arm.replace('+', '_')}_seed{seed}",
                parts,
                work=work,
                steps=args.steps,
                size=args.size,
                seed=seed,
                init=teacher,
            )
            row = {
                "seed": seed,
                **summary,
                "test": detection_ap(model, test / "detection.json", test / "images"),
            }
            report_rows[arm].append(row)
            print(json.dumps({"arm": arm, **row}), flush=True)
    summary = {
        arm: {
            key: mean_spread([r["test"][key] for r in rows])
            for key in ("AP50_seen", "AP50_rare", "AP_seen", "AP_rare")
            if rows and all(key in r["test"] for r in rows)
        }
        for arm, rows in report_rows.items()
    }
    write_report(
        args.out, "self_training.py", args, started, pseudo_labels=quality, summary=summary, runs=report_rows
    )


if __name__ == "__main__":
    main()
