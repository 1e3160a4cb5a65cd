"""``glip ask`` (GLIPv2 grounded VQA) and ``glip caption`` (GLIPv2 grounded captioning) over image files."""

from __future__ import annotations

import argparse
from typing import Any

from glip.cli.common import add_command, add_device_argument, skip_reporter

ASK_EXAMPLES = """examples:
  glip ask shapes.png --question "what colour is the circle?"
  glip ask synth/test/images/ --question "how many stars are there?" --out answers/
  glip ask shapes.png --question "what shape is the blue object?" --entities "the blue object"
"""

CAPTION_EXAMPLES = """examples:
  glip caption shapes.png
  glip caption synth/test/images/ --beams 3 --out captions/
"""

#: the default model of ask / caption: the bundled GLIPv2 demo model (the only GLIPv2 weights anywhere)
DEFAULT_MODEL = "demo_v2"


def _common(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument("images", nargs="+", help="image files, directories, quoted globs or http(s):// URLs")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a model with GLIPv2 heads: '{DEFAULT_MODEL}' (bundled, default) or a saved directory holding them",
    )
    parser.add_argument("--out", default=out, help=f"output directory (default {out}/)")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="largest image (width x height) to decode; larger are skipped",
    )
    add_device_argument(parser)


ASK_HELP = "answer a question about images, with the boxes of what it is about (GLIPv2)"


def add_ask_parser(subparsers: Any) -> argparse.ArgumentParser:
    ask = add_command(subparsers, "ask", ASK_HELP, ASK_EXAMPLES)
    _common(ask, "glip-answers")
    ask.add_argument("--question", required=True, help='the question, e.g. "what colour is the circle?"')
    ask.add_argument(
        "--entities",
        default=None,
        help='";"-separated phrases of the question to box (default: its noun phrases, e.g. "the circle")',
    )
    ask.add_argument(
        "--threshold", type=float, default=0.3, help="minimum score of an entity box (default 0.3)"
    )
    ask.set_defaults(run=run_ask)
    return ask


def add_caption_parser(subparsers: Any) -> argparse.ArgumentParser:
    caption = add_command(
        subparsers, "caption", "caption images, each grounded word with its box (GLIPv2)", CAPTION_EXAMPLES
    )
    _common(caption, "glip-captions")
    caption.add_argument("--beams", type=int, default=1, help="beam search width (default 1: greedy)")
    caption.add_argument(
        "--max-length", type=int, default=32, help="most word pieces per caption (default 32)"
    )
    caption.add_argument(
        "--min-score",
        type=float,
        default=0.3,
        help="draw a word's box when it scores at least this (default 0.3)",
    )
    caption.set_defaults(run=run_caption)
    return caption


def _predictor(args: argparse.Namespace) -> Any:
    from glip.predictor import GLIPPredictor
    from glip.runtime import resolve_device

    return GLIPPredictor.from_pretrained(args.model, device=str(resolve_device(args.device)))


def _paths(items: list[str]) -> list[Any]:
    from glip.detect import expand_inputs

    paths = expand_inputs(items)
    if not paths:
        raise ValueError("no images found in " + ", ".join(items))
    return paths


def _folder_options(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The keyword arguments ``ask_to_folder`` and ``caption_to_folder`` share: skipped files reported on
    stderr, the pixel limit when given."""
    options: dict[str, Any] = {"on_skip": skip_reporter(command)}
    if args.max_pixels is not None:
        options["max_pixels"] = args.max_pixels
    return options


def _box(box: Any) -> str:
    return f"[{', '.join(f'{v:.0f}' for v in box)}]"


def _summary(result: Any, done: str, results_file: str) -> int:
    """Print the closing line; exit code 1 when any image was skipped."""
    print(
        f"{len(result.records)} image(s) {done}, {len(result.errors)} skipped; "
        f"results in {result.out_dir}/ ({results_file} + PNGs)"
    )
    return 1 if result.errors else 0


def run_ask(args: argparse.Namespace) -> int:
    from glip.v2.outputs import ANSWERS_FILE, ask_to_folder

    paths = _paths(args.images)
    entities = [e.strip() for e in args.entities.split(";") if e.strip()] if args.entities else None

    def show(path: Any, answer: Any) -> None:
        boxes = ", ".join(
            f"{phrase} {_box(box)} {score:.2f}"
            for phrase, box, score in zip(
                answer.entities.phrases, answer.entities.boxes.tolist(), answer.entities.scores.tolist()
            )
        )
        print(f"{path}: {answer.answer} ({answer.score:.2f})" + (f"  boxes: {boxes}" if boxes else ""))

    result = ask_to_folder(
        _predictor(args),
        paths,
        args.question,
        out_dir=args.out,
        threshold=args.threshold,
        entities=entities,
        on_result=show,
        **_folder_options(args, "ask"),
    )
    return _summary(result, "answered", ANSWERS_FILE)


def run_caption(args: argparse.Namespace) -> int:
    from glip.v2.outputs import CAPTIONS_FILE, caption_to_folder

    paths = _paths(args.images)

    def show(path: Any, caption: Any) -> None:
        words = ", ".join(
            f"{w.word} {_box(w.box)} {w.score:.2f}"
            for w in caption.grounded(args.min_score)
            if w.word.isalpha()
        )
        print(f"{path}: {caption.text}" + (f"\n  grounded: {words}" if words else ""))

    result = caption_to_folder(
        _predictor(args),
        paths,
        out_dir=args.out,
        beams=args.beams,
        max_length=args.max_length,
        min_score=args.min_score,
        on_result=show,
        **_folder_options(args, "caption"),
    )
    return _summary(result, "captioned", CAPTIONS_FILE)
