"""``glip models``: the released checkpoints and the presets (imports no torch)."""

from __future__ import annotations

import argparse
from typing import Any

from glip.cli.common import add_command

EXAMPLES = """examples:
  glip models
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "models", "list released checkpoints and presets", EXAMPLES)
    parser.set_defaults(run=run)
    return parser


def run(_args: argparse.Namespace) -> int:
    from glip.config import PRESETS
    from glip.weights.demo import DEMO_PROMPT, demo_model_problem
    from glip.weights.registry import RELEASED

    problem = demo_model_problem(imports=False)
    print('bundled (no download; --model demo, GLIPPredictor.from_pretrained("demo")):')
    print(
        f"  {'demo':<10} the 'tiny' preset trained on the synthetic world of coloured shapes (glip synth): "
        f"{len(DEMO_PROMPT.split(','))} seen names"
    )
    print(f"  {'':<10} {'installed' if problem is None else 'not loadable here: ' + problem}")
    print("released checkpoints (glip detect --model NAME; offline: put the file in $GLIP_HOME):")
    for name, info in sorted(RELEASED.items()):
        print(f"  {name:<10} {info.description}  [{info.url}]")
    print("presets (architectures): " + ", ".join(sorted(PRESETS)))
    return 0
