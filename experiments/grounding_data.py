"""Miniature claim 3: grounding data vs more detection data (rare / caption-only concepts).

    python experiments/grounding_data.py                   # 3 arms x 1 seed, 3100 steps: ~1.5 hours on 2 cores
    python experiments/grounding_data.py --steps 1000      # the documented runs (47 min on one core)
    python experiments/grounding_data.py --seeds 0 1 2

Three arms, each the ``tiny`` preset trained for the same number of steps (arms.py: the demo model's recipe
from before its frozen stages and 1:0.25 mix) on the synthetic ``train`` world (2000 images, seed 0) split
into halves A and B by image id:

* ``det``: detection data of half A only (seen names; rare objects unannotated);
* ``det+det``: detection data of A and B mixed 1:1 ("more detection data": the same seen names);
* ``det+ground``: detection data of A and *grounding* captions of B mixed 1:1 (the captions also name the rare
  colour "orange" and shape "diamond", which no detection label does).

Evaluation on a ``test`` world never used in training (seed 7): box AP / AP50 on the seen and on the rare
names (``glip.eval.evaluate_coco``), and phrase-grounding Recall@1 / @5 (any-box protocol) of the test captions (referring
expressions such as "the small red circle left of a blue square"; ``glip.eval.evaluate_flickr``).

Claim 3 (GLIP section 4 / Table 2, GoldG vs more detection
data): adding grounding data helps the rare / caption-only concepts more than adding the same amount of
detection data: compare ``AP50_rare`` of ``det+ground`` with ``det+det`` (both against ``det``).
Writes ``experiments/results/grounding_data.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from arms import (
    REPO,
    detection_ap,
    grounding_recall,
    image_ids,
    mean_spread,
    subset,
    train_arm,
    world,
    write_report,
)

ARMS = ("det", "det+det", "det+ground")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=3100)
    parser.add_argument("--size", type=int, default=192, help="image shorter side (the demo model's)")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--work", default=str(REPO / "outputs" / "grounding_data"))
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "grounding_data.json"))
    args = parser.parse_args()

    started = time.perf_counter()
    work = Path(args.work)
    train, test = world("train", args.train_images, 0), world("test", args.test_images, 7)
    ids = image_ids(train / "detection.json")
    half_a, half_b = set(ids[: len(ids) // 2]), set(ids[len(ids) // 2 :])
    det_a = subset(train / "detection.json", half_a, work / "data" / "det_A.json")
    det_b = subset(train / "detection.json", half_b, work / "data" / "det_B.json")
    ground_b = subset(train / "grounding.json", half_b, work / "data" / "ground_B.json")
    images = train / "images"
    data = {
        "det": [(det_a, images, 1.0)],
        "det+det": [(det_a, images, 1.0), (det_b, images, 1.0)],
        "det+ground": [(det_a, images, 1.0), (ground_b, images, 1.0)],
    }
    results: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    for seed in args.seeds:
        for arm in args.arms:
            name = f"{arm.replace(' ', '_').replace('+', '_')}_seed{seed}"
            model, summary = train_arm(
                name, data[arm], work=work, steps=args.steps, seed=seed, size=args.size
            )
            row = {"seed": seed, **summary}
            row["detection"] = detection_ap(model, test / "detection.json", test / "images")
            row["grounding"] = grounding_recall(model, test / "grounding.json", test / "images")
            results[arm].append(row)
            print(json.dumps({"arm": arm, **row}), flush=True)
    summary_rows = {}
    for arm, rows in results.items():
        if not rows:
            continue
        summary_rows[arm] = {
            key: mean_spread([r["detection"][key] for r in rows])
            for key in ("AP50_seen", "AP50_rare", "AP_seen", "AP_rare")
            if all(key in r["detection"] for r in rows)
        }
        for key in ("anybox_R@1", "anybox_R@5"):
            found = [r["grounding"].get(key) for r in rows]
            if all(v is not None for v in found):
                summary_rows[arm][f"grounding_{key}"] = mean_spread(found)
    write_report(args.out, "grounding_data.py", args, started, summary=summary_rows, runs=results)


if __name__ == "__main__":
    main()
