"""Miniature claim 4: zero-shot transfer to held-out names and new class sets, without training on them.

    python experiments/zero_shot.py                       # the bundled demo model
    python experiments/zero_shot.py --seeds 7 8 9                # three world seeds: mean +- std per set

Generates (seeded, never used in training) the ``test``, ``synonyms``, ``task_A`` and ``task_B`` splits of the
synthetic world (``glip synth``) and evaluates the model with ``glip.eval`` on each, with nothing but the
class names as the prompt:

* ``test``: the seen names (the reference) and the rare names (only in grounding captions in training);
* ``synonyms`` / ``detection.json``: the *same images* with every seen word replaced by a held-out synonym
  ("crimson circle" for "red circle"), against ``detection_seen_names.json``: the same boxes under the
  training names. The ratio says how much of the detector the pretrained text encoder carries to new words;
* ``task_A``: new shapes named by shape only ("pentagon"), ``task_B``: new colours x seen shapes
  ("pink circle"): new class sets among unannotated distractors of seen concepts.

Control for each held-out set ("names permuted"): the same boxes with the category names shuffled among the
categories (no name keeps its own), i.e. the AP a detector gets from localisation alone when the names carry
no information. Zero-shot transfer is the gap between a row and its control.

Writes ``experiments/results/zero_shot.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from arms import concept_metrics, mean_spread, write_report

REPO = Path(__file__).resolve().parents[1]


def permuted_names(source: Path, target: Path, seed: int = 0) -> Path:
    """The same file with the category names deranged (seeded): every category gets another one's name."""
    import random

    data = json.loads(source.read_text())
    names = [c["name"] for c in data["categories"]]
    rng = random.Random(seed)
    order = list(range(len(names)))
    while any(i == j for i, j in enumerate(order)):
        rng.shuffle(order)
    for category, j in zip(data["categories"], order):
        category["name"] = names[j]
    target.write_text(json.dumps(data))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo", help="model directory or name (default: the demo model)")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[7],
        help="world seeds, one set of worlds each (the demo model trained on seed 0)",
    )
    parser.add_argument("--work", default=str(REPO / "outputs" / "zero_shot"))
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "zero_shot.json"))
    args = parser.parse_args()

    from glip.data.synthetic.writers import generate
    from glip.eval.coco import evaluate_coco
    from glip.eval.options import EvalOptions
    from glip.weights.loading import load_model

    started = time.perf_counter()
    model = load_model(args.model).eval()
    work = Path(args.work)
    runs = [
        ("test", "detection.json", "test: seen + rare names"),
        ("synonyms", "detection.json", "synonyms: held-out names"),
        ("synonyms", "detection_seen_names.json", "synonyms: same boxes, training names"),
        ("synonyms", "permuted:detection.json", "control: held-out names permuted"),
        ("task_A", "detection.json", "task_A: new shapes"),
        ("task_A", "permuted:detection.json", "control: new shapes permuted"),
        ("task_B", "detection.json", "task_B: new colours"),
        ("task_B", "permuted:detection.json", "control: new colours permuted"),
    ]
    rows = []
    for seed in args.seeds:
        for split, file, label in runs:
            folder = work / f"{split}_seed{seed}_n{args.images}"
            if not (folder / "detection.json").exists():
                generate(folder, num_images=args.images, seed=seed, split=split, overwrite=True)
            ann = folder / file
            if file.startswith("permuted:"):
                ann = permuted_names(folder / file.split(":", 1)[1], folder / "detection_permuted.json")
            result = evaluate_coco(model, ann, folder / "images", EvalOptions(progress=True, report=False))
            rows.append(
                {
                    "set": label,
                    "seed": seed,
                    "split": split,
                    "file": file,
                    "AP": round(float(result.metrics["AP"]), 4),
                    "AP50": round(float(result.metrics["AP50"]), 4),
                    "by_concept": concept_metrics(result, ann),
                }
            )
            print(json.dumps(rows[-1]))
    # AP50 over the world seeds, per set (and per concept: "test" holds the seen and the rare names)
    summary: dict[str, dict[str, float]] = {}
    for _, _, label in runs:
        mine = [r for r in rows if r["set"] == label]
        summary[label] = mean_spread([r["AP50"] for r in mine])
        for concept in mine[0]["by_concept"]:
            values = [r["by_concept"][concept]["AP50"] for r in mine if concept in r["by_concept"]]
            summary[f"{label} [{concept}]"] = mean_spread(values)
    write_report(args.out, "zero_shot.py", args, started, summary=summary, rows=rows)


if __name__ == "__main__":
    main()
