"""``glip export``: a model to ONNX (``model.onnx`` + ``config.json`` + ``onnx.json``) for onnxruntime."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from glip.cli.common import add_command

EXAMPLES = """examples:
  glip export --model demo --format onnx --out exported/          # the bundled demo model
  glip export --model glip_t --format onnx --out glip_t_onnx/ --image-size 800 1344
  glip export --model random:tiny_random --format onnx --out tiny_onnx/
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "export", "export a model to ONNX (run it with onnxruntime)", EXAMPLES)
    parser.add_argument(
        "--model",
        default="demo",
        help="'demo' (bundled), released name, saved directory, .pth, random:PRESET",
    )
    parser.add_argument("--config", default=None, help="preset name or official YAML for an official .pth")
    parser.add_argument("--format", default="onnx", choices=("onnx",), help="export format (onnx)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's, >= 16)")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=(320, 320),
        metavar=("H", "W"),
        help="example image size of the trace (multiples of 32; height and width stay dynamic)",
    )
    parser.add_argument(
        "--num-tokens", type=int, default=16, help="example token count of the trace (stays dynamic)"
    )
    parser.set_defaults(run=run_export)
    return parser


def run_export(args: argparse.Namespace) -> int:
    import time

    from glip.export.onnx import to_onnx
    from glip.weights.resolve import resolve_model

    model = resolve_model(args.model, args.config, "cpu")
    started = time.perf_counter()
    options: dict[str, Any] = {"image_size": tuple(args.image_size), "num_tokens": args.num_tokens}
    if args.opset is not None:
        options["opset"] = args.opset
    path = to_onnx(model.eval(), args.out, **options)
    size_mb = Path(path).stat().st_size / 2**20
    print(
        f"wrote {path} ({size_mb:.1f} MB) in {time.perf_counter() - started:.0f} s; run it with "
        f"GLIPPredictor.from_onnx({str(args.out)!r}) or glip serve --model {args.out} --runtime onnxruntime"
    )
    return 0
