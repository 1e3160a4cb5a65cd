"""``glip eval`` as a script (for torchrun in the tests): ``python eval_main.py eval --task ... ``."""

from __future__ import annotations

import argparse
import logging
import sys

from glip.eval.cli import add_eval_parser, run_eval

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="glip")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    sys.exit(run_eval(parser.parse_args()))
