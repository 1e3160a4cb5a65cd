"""``glip train``: train, fine-tune, prompt-tune or linear-probe (:func:`glip.engine.train.fit`).

The command builds the model, the training set and, with ``--val-ann``, the evaluation hook
(:func:`glip.eval.hooks.coco_eval_hook`) and hands them to ``fit``: the engine imports no evaluation code.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from glip.cli.common import add_command, add_device_argument

EXAMPLES = """examples:
  glip train --preset tiny --train-ann data/train.json --train-images data/images --out runs/tiny --max-steps 2000
  glip train --preset glip_t --init glip_t --train-ann odinw/train.json --train-images odinw/ \\
      --shots 5 --seed 1 --tune prompt --lr 0.05 --set weight_decay=0.25 --out runs/prompt5
  torchrun --nproc-per-node 8 -m glip.cli train --preset glip_t --init glip_t \\
      --train-ann o365.jsonl goldg.json --train-images o365/ goldg/ --weights 1,1 --out runs/pretrain --epochs 30
  glip train ... --resume          # continue a killed run from OUT/last.pt
"""


class _HelpConfigAction(argparse.Action):
    """``--help-config``: print every ``--set`` key of the preset given before it (default tiny) and exit,
    before the required arguments are checked (as ``--help``)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            help="list every --set key (training, loss and the --preset's model config) with defaults, and exit",
        )

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *_args: Any) -> None:
        from glip.cli.set_keys import format_set_keys

        print(format_set_keys(getattr(namespace, "preset", None) or "tiny"))
        parser.exit()


TRAIN_HELP = "train, fine-tune, prompt-tune or linear-probe on detection / grounding data"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    train = add_command(subparsers, "train", TRAIN_HELP, EXAMPLES)
    train.add_argument("--preset", default="tiny", help="model architecture (glip_t, glip_l, tiny, ...)")
    train.add_argument("--init", default=None, help="initial weights: released name, saved directory or .pth")
    train.add_argument(
        "--train-ann", nargs="+", required=True, help="COCO / MDETR .json or ODVG / caption .jsonl"
    )
    train.add_argument(
        "--train-images", nargs="+", required=True, help="image directory (one per file, or one)"
    )
    train.add_argument("--weights", default=None, help="mixing weights of several training files, e.g. 1,2")
    train.add_argument("--val-ann", default=None, help="COCO .json evaluated every --set eval_every=N steps")
    train.add_argument("--val-images", default=None, help="image directory of --val-ann")
    train.add_argument("--out", required=True, help="run directory (checkpoints, metrics, configs)")
    steps = train.add_mutually_exclusive_group()
    steps.add_argument("--max-steps", type=int, default=None, help="optimiser steps to train (or --epochs)")
    steps.add_argument(
        "--epochs", type=int, default=None, help="passes over the training set (or --max-steps)"
    )
    train.add_argument("--batch-size", type=int, default=2, help="images per process")
    train.add_argument(
        "--lr", type=float, default=None, help="base learning rate (default: TrainConfig.lr, 1e-4)"
    )
    train.add_argument(
        "--tune",
        choices=("full", "prompt", "linear"),
        default="full",
        help="what trains: the full model, prompt tuning or a linear probe (default full)",
    )
    train.add_argument("--shots", type=int, default=0, help="k-shot subset per class (ODinW protocol)")
    train.add_argument("--seed", type=int, default=0, help="random seed (data order, init, few-shot subset)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an --out folder that holds one (its checkpoint, model and logs are replaced)",
    )
    train.add_argument(
        "--on-error", choices=("skip", "raise"), default="skip", help="bad records: skip or stop"
    )
    add_device_argument(train)
    train.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides: TrainConfig fields (warmup_steps=100), loss settings (loss.inter_loss_weight=0.5) "
        "or model config keys (head.num_blocks=2); --help-config lists them",
    )
    train.add_argument("--help-config", action=_HelpConfigAction)
    train.add_argument(
        "--trust-pickle",
        action="store_true",
        help="with --resume: allow a last.pt that needs full unpickling (not written by this glip; "
        "unpickling can run code: only for files you trust)",
    )

    train.set_defaults(run=run_train)
    return train


RUN_FILES = ("last.pt", "metrics.jsonl", "metrics.csv", "train_config.json", "criterion_config.json", "model")


def check_out_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over an existing one (it would overwrite ``last.pt`` / ``model/`` and append
    a second run to ``metrics.jsonl``) unless ``--resume`` or ``--overwrite``; with ``--overwrite`` the old
    logs are removed so the new run's log starts clean."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not found or resume:
        return
    if not overwrite:
        raise ValueError(
            f"{out} already holds a training run ({', '.join(found)}): pass --resume to continue it, "
            "--overwrite to start over in it, or another --out"
        )
    for name in ("metrics.jsonl", "metrics.csv"):
        (out / name).unlink(missing_ok=True)


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from glip.cli.set_keys import check_set_keys
    from glip.config import apply_overrides, get_preset
    from glip.data.build import build_training_set
    from glip.data.transforms import TrainTransform
    from glip.engine.train import TrainConfig, fit, parse_train_overrides
    from glip.losses.criterion import Criterion, CriterionConfig
    from glip.models.glip import build_model
    from glip.runtime import resolve_device
    from glip.weights.loading import load_model

    resolve_device(args.device)  # a bad --device: one message before any data is read
    check_out_dir(Path(args.out), resume=args.resume, overwrite=args.overwrite)
    check_set_keys(args.set, args.preset, with_model=not args.init)
    train_overrides, loss_overrides, model_overrides = parse_train_overrides(args.set)
    criterion = Criterion(CriterionConfig(**loss_overrides))
    if args.init:
        is_pth = Path(args.init).suffix in (".pth", ".pt", ".bin")
        model = load_model(args.init, config=args.preset if is_pth else None)
        if model_overrides:
            raise ValueError("model config overrides cannot change a loaded --init model")
    else:
        torch.manual_seed(args.seed)
        model = build_model(apply_overrides(get_preset(args.preset), model_overrides))
    transform = TrainTransform.from_config(model.config.input, seed=args.seed)
    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    dataset = build_training_set(
        args.train_ann,
        args.train_images,
        transform,
        weights,
        shots=args.shots,
        seed=args.seed,
        on_error=args.on_error,
    )
    if len(dataset) == 0:
        raise ValueError("the training set is empty (every record was skipped?)")
    if args.max_steps is None and args.epochs is None:
        raise ValueError("give --max-steps or --epochs")
    fields = {"out_dir": args.out, "batch_size": args.batch_size, "seed": args.seed, "tune": args.tune}
    fields.update(max_steps=args.max_steps, epochs=args.epochs, device=args.device)
    if args.lr is not None:
        fields["lr"] = args.lr
    config = dataclasses.replace(TrainConfig(**fields), **train_overrides)
    eval_fn = None
    if args.val_ann:
        from glip.eval.hooks import coco_eval_hook

        eval_fn = coco_eval_hook(args.val_ann, args.val_images)
    summary = fit(
        model,
        dataset,
        config,
        resume=args.resume,
        eval_fn=eval_fn,
        criterion=criterion,
        trust_pickle=args.trust_pickle,
    )
    from glip.engine.distributed import init_distributed

    if init_distributed().is_main:
        from glip.eval.report import plot_training_curves
        from glip.weights.loading import save_model

        save_model(model, Path(args.out) / "model")
        print(
            f"trained {summary['step']} steps; model in {Path(args.out) / 'model'} (glip detect --model ...)"
        )
        metrics = Path(args.out) / "metrics.jsonl"
        curves = plot_training_curves(metrics) if metrics.exists() else None
        if curves is not None:
            print(f"training curves (loss parts and lr against step) in {curves}")
    return 0
