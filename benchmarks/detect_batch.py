"""Throughput of the predictor (what ``glip detect --batch-size B`` runs) at batch sizes 1 / 4 / 8, side by side.

    python benchmarks/detect_batch.py            # -> benchmarks/results/detect_batch.json

The bundled demo model on 24 images of the synthetic world (320 x 320, ``glip synth --split test --seed 5``),
the 30 seen names as classes; the batch sizes alternate over ``--rounds`` rounds (a load change hits all alike)
and each figure is the median of its rounds. The largest box / score difference to batch size 1 is reported
(matrix kernels may round differently for another batch shape).

    python benchmarks/detect_batch.py --model demo_v2 --masks --out benchmarks/results/detect_masks.json

``--masks`` also times ``predict(..., masks=True)`` (the GLIPv2 mask head: tower features + the network input
pooled per box) in the same rounds, so the cost of the masks is a ratio of two figures of one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--masks", action="store_true", help="also time masks=True (needs a mask head)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "detect_batch.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from glip.data.synthetic.writers import generate
    from glip.images import load_image
    from glip.predictor import GLIPPredictor
    from glip.weights.demo import DEMO_PROMPT

    folder = Path(tempfile.mkdtemp()) / "world"
    generate(folder, num_images=args.images, seed=5, split="test")
    images = [load_image(p) for p in sorted((folder / "images").glob("*.png"))]
    predictor = GLIPPredictor.from_pretrained(args.model, device="cpu")
    classes = DEMO_PROMPT.split(",")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    predictor.predict(images[:2], classes=classes, batch_size=2)  # warm-up (text cache, allocator)
    seconds: dict[int, list[float]] = {b: [] for b in sizes}
    mask_seconds: dict[int, list[float]] = {b: [] for b in sizes}
    outputs: dict[int, list] = {}
    masks_found = 0
    for _ in range(args.rounds):
        for batch in sizes:
            tick = time.perf_counter()
            results = predictor.predict(images, classes=classes, batch_size=batch, threshold=0.3)
            seconds[batch].append(time.perf_counter() - tick)
            outputs[batch] = [(r.boxes, r.scores) for r in results]
            if args.masks:
                tick = time.perf_counter()
                with_masks = predictor.predict(
                    images, classes=classes, batch_size=batch, threshold=0.3, masks=True
                )
                mask_seconds[batch].append(time.perf_counter() - tick)
                masks_found = sum(len(r.masks) for r in with_masks if r.masks is not None)

    def gap(a, b) -> float:  # largest difference of boxes / scores (inf when the detections differ in number)
        if a[0].shape != b[0].shape:
            return float("inf")
        if a[0].numel() == 0:
            return 0.0
        return max(float((a[0] - b[0]).abs().max()), float((a[1] - b[1]).abs().max()))

    largest = max(gap(a, b) for s in sizes for a, b in zip(outputs[sizes[0]], outputs[s]))
    rows = {
        str(b): {
            "seconds_median": round(statistics.median(seconds[b]), 3),
            "images_per_s": round(args.images / statistics.median(seconds[b]), 2),
        }
        for b in sizes
    }
    report = {
        "command": "python benchmarks/detect_batch.py",
        "model": args.model,
        "images": args.images,
        "image_size": [320, 320],
        "threads": args.threads,
        "rounds": args.rounds,
        "batch_sizes": rows,
        "speedup_vs_batch_1": {
            str(b): round(rows[str(b)]["images_per_s"] / rows[str(sizes[0])]["images_per_s"], 2)
            for b in sizes
        },
        "largest_difference_vs_batch_1": largest,
    }
    if args.masks:
        report["command"] += f" --model {args.model} --masks"
        report["with_masks"] = {
            str(b): {
                "seconds_median": round(statistics.median(mask_seconds[b]), 3),
                "images_per_s": round(args.images / statistics.median(mask_seconds[b]), 2),
                "time_over_boxes_only": round(
                    statistics.median(mask_seconds[b]) / statistics.median(seconds[b]), 3
                ),
            }
            for b in sizes
        }
        report["masks_per_round"] = masks_found
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
