"""The ``glip`` parser, dispatch, and the one place library errors become a message and an exit code.

Exit codes: 0 success; 1 finished but some inputs were bad (reported and skipped); 2 nothing done
(bad arguments, device, model, prompt or data file).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from glip.cli import convert, detect, export, models, pseudo_label, serve, synth, train, vl
from glip.cli import eval as eval_cli

# subcommand -> its help epilog (every one starts with "examples:")
EXAMPLES = {
    "detect": detect.DETECT_EXAMPLES,
    "demo": detect.DEMO_EXAMPLES,
    "convert": convert.EXAMPLES,
    "train": train.EXAMPLES,
    "models": models.EXAMPLES,
    "pseudo-label": pseudo_label.EXAMPLES,
    "score-pseudo": pseudo_label.SCORE_EXAMPLES,
    "eval": eval_cli.EXAMPLES,
    "synth": synth.EXAMPLES,
    "serve": serve.SERVE_EXAMPLES,
    "export": export.EXAMPLES,
    "ask": vl.ASK_EXAMPLES,
    "caption": vl.CAPTION_EXAMPLES,
}


def version() -> str:
    """The installed distribution's version, or the package's ``__version__`` when not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("glip")
    except PackageNotFoundError:
        import glip

        return glip.__version__


class _VersionAction(argparse.Action):
    """``--version``: looks the version up only when asked (importlib.metadata costs ~0.1 s at start)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kwargs: object) -> None:
        print(f"glip {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The ``glip`` parser; each subcommand's ``run`` function is in ``args.run``."""
    parser = argparse.ArgumentParser(
        prog="glip", description="GLIP: open-vocabulary detection and phrase grounding"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (and full tracebacks)")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    detect.add_parser(sub)
    detect.add_demo_parser(sub)
    convert.add_parser(sub)
    train.add_parser(sub)
    models.add_parser(sub)
    pseudo_label.add_parser(sub)
    pseudo_label.add_score_parser(sub)
    eval_cli.add_parser(sub)
    synth.add_parser(sub)
    serve.add_parser(sub)
    export.add_parser(sub)
    vl.add_ask_parser(sub)
    vl.add_caption_parser(sub)
    return parser


def _is_user_error(exc: BaseException) -> bool:
    """Errors that mean bad input (reported as one line), not a bug (a traceback).

    ``ValueError`` covers the library's input errors (PromptError, ImageError, DataError, EvalError,
    a bad device or override ...). A :class:`CheckpointError` can only have been raised when its module
    was imported, so it is looked up in ``sys.modules`` (the check itself imports no torch).
    """
    if isinstance(exc, OSError | ValueError | ImportError):
        return True
    loading = sys.modules.get("glip.weights.loading")
    return loading is not None and isinstance(exc, loading.CheckpointError)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each message (not the stream of the first call:
    ``main`` may run many times in one process, e.g. in tests that capture stderr)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(verbose: bool) -> None:
    """Messages of glip's own loggers (``glip.*``) to stderr; the root logger and other libraries' loggers
    are left as they are (a ``basicConfig`` on the root logger printed other libraries' messages twice)."""
    logger = logging.getLogger("glip")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``glip ARGV``; returns the exit code."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return args.run(args)
    except Exception as exc:
        # DataError is a ValueError: a bad training file ends here with its file and record named
        if args.verbose or not _is_user_error(exc):
            raise
        print(f"glip {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
