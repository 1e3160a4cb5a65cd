"""Miniature claim 2: deep fusion vs late fusion, on grounding and on detection.

    python experiments/fusion.py                   # late arm trained here (~30 min on 2 cores); deep = demo model
    python experiments/fusion.py --deep train      # train the deep arm too, with the same recipe
    python experiments/fusion.py --deep train --steps 1000 --seeds 0 1 2   # both arms, 3 seeds, shorter

Both arms are the demo model's recipe (experiments/demo_model.py: ``tiny``, 2000 ``train`` images of seed 0,
detection + grounding data 1:0.25, 3100 steps of batch 4 at 192 px, lr 2e-4 cosine, 200x on the score projection,
the backbone's stem + first two blocks frozen):

* ``deep``: the official VL-DyHead with X-MHA cross-attention and the in-head BERT layers (``deep_fusion=True``).
  By default the bundled demo model, which *is* this arm (same data, seed, steps and recipe);
* ``late``: ``HeadConfig(deep_fusion=False)`` (the paper's late-fusion ablation: image and text meet only in the
  final dot product).

Evaluated on a ``test`` world never used in training (seed 7): box AP50 on the seen / rare names
(``glip.eval.evaluate_coco``) and phrase-grounding Recall@1 / @5 of the test captions, referring expressions
such as "the small red circle left of a blue square" (``glip.eval.evaluate_flickr``, any-box protocol).
GLIP's claim (Table 1 / section 4.1 ablation, GLIP-T(A) vs (B)): deep fusion is better, most of all for
grounding. Writes ``experiments/results/fusion.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from arms import (
    DEMO_FROZEN_STAGES,
    DEMO_GROUNDING_WEIGHT,
    REPO,
    detection_ap,
    grounding_recall,
    mean_spread,
    train_arm,
    world,
    write_report,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deep", default="demo", help="'demo' (the bundled model), a model dir, or 'train'")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="training seeds (and train-world seeds); 1 with --deep demo",
    )
    parser.add_argument("--steps", type=int, default=3100)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--work", default=str(REPO / "outputs" / "fusion"))
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "fusion.json"))
    args = parser.parse_args()

    from glip.weights.loading import load_model

    if args.deep != "train" and args.seeds != [0]:
        parser.error("the bundled demo model is the seed-0 deep arm: use --deep train for other seeds")
    started = time.perf_counter()
    work = Path(args.work)
    test = world("test", args.test_images, 7)
    rows: dict[str, list[dict]] = {"deep": [], "late": []}
    for seed in args.seeds:
        train = world("train", args.train_images, seed)
        parts = [
            (train / "detection.json", train / "images", 1.0),
            (train / "grounding.json", train / "images", DEMO_GROUNDING_WEIGHT),
        ]
        for arm in rows:
            if arm == "deep" and args.deep != "train":
                model, summary = load_model(args.deep).eval(), {"source": args.deep}
            else:
                model, summary = train_arm(
                    f"{arm}_seed{seed}",
                    parts,
                    work=work,
                    steps=args.steps,
                    seed=seed,
                    size=args.size,
                    head={"deep_fusion": arm == "deep"},
                    frozen_stages=DEMO_FROZEN_STAGES,
                )
            row = {
                "seed": seed,
                **summary,
                "detection": detection_ap(model, test / "detection.json", test / "images"),
                "grounding": grounding_recall(model, test / "grounding.json", test / "images"),
            }
            rows[arm].append(row)
            print(json.dumps({"arm": arm, **row}), flush=True)
    summary = {
        arm: {
            f"{section}.{key}": mean_spread([r[section][key] for r in runs])
            for section, keys in (
                ("detection", ("AP_seen", "AP50_seen", "AP50_rare")),
                ("grounding", ("anybox_R@1", "merged_R@1", "anybox_R@5")),
            )
            for key in keys
            if all(key in r[section] for r in runs)
        }
        for arm, runs in rows.items()
    }
    write_report(args.out, "fusion.py", args, started, summary=summary, arms=rows)


if __name__ == "__main__":
    main()
