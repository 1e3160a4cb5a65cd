"""What the subcommand modules share: adding a subcommand with its examples, the ``--device`` flag."""

from __future__ import annotations

import argparse
from typing import Any

# the one default score threshold of `glip detect` and `glip demo` (both print it): the library's default
# (GLIPPredictor.predict, glip.detect.detect_to_folder; a test keeps them equal)
DEFAULT_THRESHOLD = 0.5

DEVICE_HELP = "auto (CUDA when available; cuda:LOCAL_RANK under torchrun), cpu, cuda, cuda:N (default auto)"


def add_command(subparsers: Any, name: str, help_text: str, examples: str) -> argparse.ArgumentParser:
    """Add subcommand ``name`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``) with its
    help text and an ``examples:`` epilog shown verbatim."""
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # -v after the subcommand too (glip detect ... -v); SUPPRESS keeps a -v given before it
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging and tracebacks"
    )
    return parser


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` (default ``auto``), resolved by :func:`glip.runtime.resolve_device` when the command
    runs: a bad name is one message and exit code 2."""
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)


def skip_reporter(command: str):  # type: ignore[no-untyped-def]
    """``on_skip`` callback of the folder commands: ``glip COMMAND: skipped: MESSAGE`` on stderr."""

    def report(message: str) -> None:
        import sys

        from tqdm import tqdm

        # written, not logged: the message must reach stderr whatever logging is configured; through tqdm so
        # that a progress bar on the terminal is not broken
        tqdm.write(f"glip {command}: skipped: {message}", file=sys.stderr)

    return report
