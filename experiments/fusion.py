"""Miniature claim 2: deep fusion vs late fusion, on grounding and on detection.

    python experiments/fusion.py                   # late arm trained here (~30 min on 2 cores); deep = demo model
    python experiments/fusion.py --deep train      # train the deep arm too, with the same recipe

Both arms are the demo model's recipe (experiments/demo_model.py: ``tiny``, 2000 ``train`` images of seed 0,
detection + grounding data 1:1, 3100 steps of batch 4 at 192 px, lr 2e-4 cosine, 200x on the score projection):

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

from arms import REPO, detection_ap, grounding_recall, train_arm, world, write_report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deep", default="demo", help="'demo' (the bundled model), a model dir, or 'train'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3100)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--work", default=str(REPO / "outputs" / "fusion"))
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "fusion.json"))
    args = parser.parse_args()

    from glip.weights.loading import load_model

    started = time.perf_counter()
    work = Path(args.work)
    train, test = world("train", args.train_images, args.seed), world("test", args.test_images, 7)
    parts = [
        (train / "detection.json", train / "images", 1.0),
        (train / "grounding.json", train / "images", 1.0),
    ]
    rows = {}
    for arm in ("deep", "late"):
        if arm == "deep" and args.deep != "train":
            model, summary = load_model(args.deep).eval(), {"source": args.deep}
        else:
            model, summary = train_arm(
                f"{arm}_seed{args.seed}",
                parts,
                work=work,
                steps=args.steps,
                seed=args.seed,
                size=args.size,
                head={"deep_fusion": arm == "deep"},
            )
        rows[arm] = {
            **summary,
            "detection": detection_ap(model, test / "detection.json", test / "images"),
            "grounding": grounding_recall(model, test / "grounding.json", test / "images"),
        }
        print(json.dumps({"arm": arm, **rows[arm]}), flush=True)
    write_report(args.out, "fusion.py", args, started, arms=rows)


if __name__ == "__main__":
    main()
