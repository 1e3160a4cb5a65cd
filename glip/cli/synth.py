"""``glip synth``: generate a deterministic synthetic grounding dataset (:func:`glip.data.synthetic.generate`).

Copied from ``glip/data/synthetic.py`` (``add_synth_parser`` / ``run_synth``), which keeps only library code.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from glip.data.synthetic.vocabulary import SPLITS  # stdlib only: `glip --help` imports no numpy / PIL / torch

EXAMPLES = """examples:
  glip synth --out synth/train --num-images 5000 --seed 0                 # seen + rare concepts
  glip synth --out synth/test --num-images 500 --seed 0 --split test      # evaluation (seen + rare names)
  glip synth --out synth/syn --num-images 500 --seed 0 --split synonyms   # test's images, held-out names
  glip synth --out synth/task_A_train --num-images 200 --seed 1 --split task_A   # new shapes (few-shot)
  glip synth --out synth/task_A_val --num-images 200 --seed 2 --split task_A

splits: train (detection names seen concepts only; rare concepts appear in grounding and captions),
test, synonyms (same seed = test's images), task_A (new shapes), task_B (new colours). See docs/synthetic.md.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``synth`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    text = "generate a deterministic synthetic grounding dataset (shapes, exact boxes, captions)"
    parser = subparsers.add_parser(
        "synth",
        help=text,
        description=text,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="output directory (must be empty unless --overwrite)")
    parser.add_argument("--num-images", type=int, default=1000, help="number of images (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, default=320, help="image side in pixels (default 320)")
    parser.add_argument(
        "--split", choices=SPLITS, default="train", help="vocabulary split (default train; see below)"
    )
    parser.add_argument(
        "--random-aspect", action="store_true", help="longer side --size, shorter side 0.6-1.0 of it"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a generated set already in --out")
    parser.add_argument(
        "--masks",
        action="store_true",
        help="add exact instance masks (COCO RLE 'segmentation') to the detection files (needs pycocotools)",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """``glip synth``: 0 on success, 2 on bad arguments or a non-empty output directory."""
    from glip.data.synthetic.writers import generate

    try:
        result = generate(
            args.out,
            args.num_images,
            seed=args.seed,
            size=args.size,
            split=args.split,
            random_aspect=args.random_aspect,
            overwrite=args.overwrite,
            masks=getattr(args, "masks", False),
        )
    except (ValueError, FileExistsError, ImportError) as exc:
        print(f"glip synth: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {result['num_images']} {result['split']} images ({result['num_objects']} objects, "
        f"{result['detection_boxes']} detection boxes, {result['grounding_phrases']} grounding phrases) "
        f"to {result['out_dir']}"
    )
    return 0
