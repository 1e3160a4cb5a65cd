"""``glip convert``: an official checkpoint -> our safetensors + config.json directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from glip.cli.common import add_command

EXAMPLES = """examples:
  glip convert glip_tiny_model_o365_goldg.pth --out models/glip_t_c/
  glip convert my_finetune.pth --config configs/my_finetune.yaml --out models/mine/
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    convert = add_command(
        subparsers, "convert", "convert an official checkpoint to safetensors + config.json", EXAMPLES
    )
    convert.add_argument("checkpoint", help="official .pth checkpoint to convert")
    convert.add_argument("--config", default=None, help="preset name or official YAML (default: inferred)")
    convert.add_argument(
        "--bert-config", default=None, help="HF BertConfig JSON when the text encoder is not BERT-base"
    )
    convert.add_argument(
        "--trust-pickle", action="store_true", help="allow non-tensor pickles (trusted files only)"
    )
    convert.add_argument("--ema", action="store_true", help="take the 'model_ema' weights")
    convert.add_argument("--non-strict", action="store_true", help="load what fits and report the rest")
    convert.add_argument("--out", required=True, help="output directory (config.json + model.safetensors)")
    convert.set_defaults(run=run)
    return convert


def run(args: argparse.Namespace) -> int:
    from glip.weights.loading import load_official, resolve_config, save_model

    config = resolve_config(args.config)
    if args.bert_config:
        if not args.config or not str(args.config).endswith((".yaml", ".yml")):
            raise ValueError("--bert-config goes with an official YAML --config")
        from glip.weights.yaml_config import config_from_yaml

        config = config_from_yaml(args.config, bert=json.loads(Path(args.bert_config).read_text()))
    model, report = load_official(
        args.checkpoint, config, strict=not args.non_strict, trust_pickle=args.trust_pickle, use_ema=args.ema
    )
    directory = save_model(model, args.out)
    print(f"converted {args.checkpoint} ({model.config.name}): {report.summary()} -> {directory}")
    return 0
