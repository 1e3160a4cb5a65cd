"""``glip pseudo-label`` (a teacher labels image-caption pairs) and ``glip score-pseudo`` (those labels
against known truth, :func:`glip.selftrain.scoring.score_pseudo_labels`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from glip.cli.common import add_command, add_device_argument

EXAMPLES = """examples:
  glip pseudo-label --teacher glip_t --captions pairs.jsonl --images images/ --out pseudo.jsonl
  glip pseudo-label --teacher runs/teacher/model --captions synth/train/captions.jsonl \\
      --images synth/train/images --out pseudo/train.jsonl --threshold 0.5 --batch-size 8
  torchrun --nproc-per-node 8 -m glip.cli pseudo-label --teacher glip_l --captions cc3m.jsonl \\
      --images cc3m/ --out cc3m_pseudo.jsonl --batch-size 8 --resume
  glip pseudo-label ... --resume        # continue a killed run (finished shards are kept)
  glip pseudo-label ... --merge         # only merge the shards of finished ranks
"""

SCORE_EXAMPLES = """examples:
  glip score-pseudo pseudo/train.jsonl synth/train/captions_gt.json
  glip score-pseudo pseudo/web.jsonl synth/web/captions_gt.json --thresholds 0.6,0.7
"""


PSEUDO_LABEL_HELP = "pseudo-label image-caption pairs with a teacher (self-training)"
SCORE_PSEUDO_HELP = "precision / recall of pseudo-labels against known truth"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    pseudo = add_command(subparsers, "pseudo-label", PSEUDO_LABEL_HELP, EXAMPLES)
    pseudo.add_argument("--teacher", required=True, help="released name, saved directory or official .pth")
    pseudo.add_argument("--config", default=None, help="preset name or official YAML for an official .pth")
    pseudo.add_argument(
        "--captions", required=True, help='JSONL lines {"image": path or URL, "caption": ...}'
    )
    pseudo.add_argument("--images", default=None, help="directory the image paths are relative to")
    pseudo.add_argument("--out", required=True, help="output ODVG grounding JSONL (shards in OUT.parts/)")
    pseudo.add_argument("--threshold", type=float, default=0.5, help="keep boxes scoring above (0.5)")
    pseudo.add_argument("--max-phrases", type=int, default=None, help="noun phrases per caption (all)")
    pseudo.add_argument("--max-boxes-per-phrase", type=int, default=10, help="cap per phrase (10)")
    pseudo.add_argument("--nms", type=float, default=0.5, help="per-phrase NMS IoU (0.5)")
    pseudo.add_argument("--batch-size", type=int, default=1, help="pairs per forward pass (1)")
    pseudo.add_argument("--shard-size", type=int, default=1000, help="input lines per output shard (1000)")
    pseudo.add_argument("--resume", action="store_true", help="continue a killed run in OUT.parts/")
    pseudo.add_argument("--merge", action="store_true", help="only merge finished shards into OUT")
    add_device_argument(pseudo)
    pseudo.set_defaults(run=run_pseudo_label)
    return pseudo


def add_score_parser(subparsers: Any) -> argparse.ArgumentParser:
    score = add_command(subparsers, "score-pseudo", SCORE_PSEUDO_HELP, SCORE_EXAMPLES)
    score.add_argument("pseudo", help="ODVG JSONL written by glip pseudo-label")
    score.add_argument("truth", help="COCO truth with tokens_positive (captions_gt.json of glip synth)")
    score.add_argument(
        "--iou",
        type=float,
        default=0.5,
        help="IoU at which a pseudo box matches a reference box (default 0.5)",
    )
    score.add_argument("--thresholds", default="", help="also score stricter thresholds, e.g. 0.6,0.7")
    score.set_defaults(run=run_score)
    return score


def run_pseudo_label(args: argparse.Namespace) -> int:
    """``glip pseudo-label``: the same command on one CPU or under torchrun (each rank its own shards)."""
    from glip.engine.distributed import cleanup, init_distributed
    from glip.runtime import resolve_device
    from glip.selftrain import PseudoLabelConfig, Teacher, merge_shards, pseudo_label, read_lines
    from glip.weights.resolve import resolve_model

    config = PseudoLabelConfig(
        threshold=args.threshold,
        max_phrases=args.max_phrases,
        max_boxes_per_phrase=args.max_boxes_per_phrase,
        nms_iou=args.nms,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
    )
    if args.merge:
        summary = merge_shards(args.out, sum(1 for _ in read_lines(args.captions)))
    else:
        device = resolve_device(args.device)  # cuda:LOCAL_RANK under torchrun
        info = init_distributed(str(device))
        try:
            teacher = Teacher(resolve_model(args.teacher, args.config, device), device=device)
            result = pseudo_label(
                teacher,
                read_lines(args.captions),
                args.images,
                args.out,
                config,
                resume=args.resume,
                rank=info.rank,
                world_size=info.world_size,
                teacher_name=args.teacher,
                captions=str(args.captions),
            )
        finally:
            cleanup()
        if result is None:  # ranks > 0: rank 0 merges and reports
            return 0
        summary = result
    stats = summary.stats
    print(
        f"{stats.pairs} pairs: {stats.records} records written to {summary.output} ({stats.boxes} boxes, "
        f"{stats.phrases_kept} phrases, {len(stats.unique_phrases)} unique), {stats.no_confident_phrase} "
        f"without a confident phrase, {stats.bad_images} unreadable images, {stats.bad_records} bad records; "
        f"statistics in {summary.stats_path} and {summary.histogram_path}"
    )
    return 1 if stats.bad_images or stats.bad_records else 0


def run_score(args: argparse.Namespace) -> int:
    """``glip score-pseudo``: prints one JSON object, ``{"written": scores, "> T": scores, ...}``."""
    from glip.selftrain.scoring import score_pseudo_labels

    rows = {"written": score_pseudo_labels(args.pseudo, args.truth, args.iou)}
    for value in [float(v) for v in args.thresholds.split(",") if v.strip()]:
        rows[f"> {value:g}"] = score_pseudo_labels(args.pseudo, args.truth, args.iou, threshold=value)
    print(json.dumps(rows, indent=1))
    return 0
