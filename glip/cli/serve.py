"""``glip serve``: ``add_parser(subparsers)`` adds the command; ``run_serve(args) -> int`` loads the model
once (:func:`glip.serve.app.load_served_predictor`) and serves it until Ctrl-C (exit code 0; 2 when the model
or the port cannot be used)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from glip.cli.common import add_command

logger = logging.getLogger(__name__)

SERVE_EXAMPLES = """examples:
  glip serve                                  # the bundled demo model on http://127.0.0.1:8000
  glip serve --model glip_t --device cuda --port 8080 --max-batch 16
  glip serve --model exported/ --runtime onnxruntime   # a folder written by glip export (CPU)
  curl -F image=@street.jpg -F classes="person,bicycle" http://127.0.0.1:8000/detect
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "serve", "HTTP server: POST /detect, a web page at /", SERVE_EXAMPLES)
    add_serve_arguments(parser)
    parser.set_defaults(run=run_serve)
    return parser


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``glip serve`` (model, address, batching, limits)."""
    parser.add_argument(
        "--model",
        default="demo",
        help="'demo' / 'demo_v2' (bundled; demo_v2 also answers /ask and /caption), a released name, saved "
        "directory or official .pth",
    )
    parser.add_argument("--config", default=None, help="preset name or official YAML for an official .pth")
    parser.add_argument(
        "--runtime",
        default="pytorch",
        choices=("pytorch", "onnxruntime"),
        help="onnxruntime: --model is a folder written by glip export, run on CPU in fp32",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "bf16"),
        help="fp16 / bf16 autocast on a GPU (fp32)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    parser.add_argument("--max-batch", type=int, default=8, help="requests batched together (8)")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="wait for a fuller batch (10 ms)")
    parser.add_argument("--max-queue", type=int, default=64, help="waiting requests before 503 (64)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest image file (20 MB)")
    parser.add_argument("--max-pixels", type=int, default=25_000_000, help="largest width x height")
    parser.add_argument("--classes", default=None, help="comma-separated classes pre-filled in the page")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info"),
        help="uvicorn's log level (info)",
    )
    parser.epilog = SERVE_EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def run_serve(args: argparse.Namespace) -> int:
    """Load the model once, then serve it until interrupted."""
    try:
        from glip.serve.app import MB, create_app, load_served_predictor
        from glip.serve.server import ServerStartError, bind_socket, run_server
    except ImportError as exc:
        print(f"glip serve: {exc}")
        return 2
    try:
        bind_socket(args.host, args.port).close()  # fail before the (slow) model load
    except ServerStartError as exc:
        print(f"glip serve: {exc}")
        return 2
    predictor, name, hint = load_served_predictor(
        args.model, args.config, args.device, args.precision, runtime=args.runtime
    )
    if args.classes:
        hint = [c.strip() for c in args.classes.split(",") if c.strip()]
    app = create_app(
        predictor,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_upload_bytes=int(args.max_upload_mb * MB),
        max_pixels=args.max_pixels,
        model_name=name,
        classes_hint=hint,
    )
    print(f"glip serve: model {name} on {predictor.device}; open http://{args.host}:{args.port}/")
    try:
        run_server(app, args.host, args.port, log_level=args.log_level)
    except ServerStartError as exc:
        print(f"glip serve: {exc}")
        return 2
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down gracefully and re-raised it
        print("glip serve: stopped")
    return 0
