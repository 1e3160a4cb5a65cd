"""The ``glip`` command: a thin layer over the library.

Exit codes: 0 success; 1 finished but some inputs were bad (reported and skipped); 2 nothing done
(bad arguments, model or prompt).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("glip")

EXAMPLES = {
    "detect": """examples:
  glip detect street.jpg --classes "person,bicycle,traffic light" --out results/
  glip detect photos/ --classes-file lvis_names.txt --chunk-size 40 --model glip_t --out results/
  glip detect dog.jpg --caption "a black dog next to a red ball" --phrases "a black dog;a red ball" --out results/
  glip detect shapes.png --classes "red circle,blue square" --model runs/synth/model --masks --out results/
""",
    "demo": """examples:
  glip demo                 # runs on the bundled example, writes glip-demo/
  glip demo --out my-demo/
""",
    "convert": """examples:
  glip convert glip_tiny_model_o365_goldg.pth --out models/glip_t_c/
  glip convert my_finetune.pth --config configs/my_finetune.yaml --out models/mine/
""",
    "train": """examples:
  glip train --preset tiny --train-ann data/train.json --train-images data/images --out runs/tiny --max-steps 2000
  glip train --preset glip_t --init glip_t --train-ann odinw/train.json --train-images odinw/ \\
      --shots 5 --seed 1 --tune prompt --lr 0.05 --set weight_decay=0.25 --out runs/prompt5
  torchrun --nproc-per-node 8 -m glip.cli train --preset glip_t --init glip_t \\
      --train-ann o365.jsonl goldg.json --train-images o365/ goldg/ --weights 1,1 --out runs/pretrain --epochs 30
  glip train ... --resume          # continue a killed run from OUT/last.pt
""",
    "models": """examples:
  glip models
""",
    "pseudo-label": """examples:
  glip pseudo-label --teacher glip_t --captions pairs.jsonl --images images/ --out pseudo.jsonl
  glip pseudo-label --teacher runs/teacher/model --captions synth/train/captions.jsonl \\
      --images synth/train/images --out pseudo/train.jsonl --threshold 0.5 --batch-size 8
  torchrun --nproc-per-node 8 -m glip.cli pseudo-label --teacher glip_l --captions cc3m.jsonl \\
      --images cc3m/ --out cc3m_pseudo.jsonl --batch-size 8 --resume
  glip pseudo-label ... --resume        # continue a killed run (finished shards are kept)
  glip pseudo-label ... --merge         # only merge the shards of finished ranks
""",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glip", description="GLIP: open-vocabulary detection and phrase grounding"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    detect = add("detect", "detect classes or ground a caption in images")
    detect.add_argument("images", nargs="+", help="image files or directories")
    prompt = detect.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--classes", help='comma-separated class names, e.g. "cat,dog"')
    prompt.add_argument("--classes-file", help="a file with one class name per line")
    prompt.add_argument("--caption", help="a free-form caption to ground")
    detect.add_argument("--phrases", help='phrases of the caption, ";"-separated (default: noun phrases)')
    detect.add_argument("--model", default=None, help="released name, saved directory or official .pth")
    detect.add_argument("--config", default=None, help="preset name or official YAML for an official .pth")
    detect.add_argument("--threshold", type=float, default=0.5, help="minimum score (default 0.5)")
    detect.add_argument(
        "--chunk-size", type=int, default=None, help="classes per prompt (default: fill 256 tokens)"
    )
    detect.add_argument("--batch-size", type=int, default=1)
    detect.add_argument("--device", default="cpu")
    detect.add_argument("--out", required=True, help="output directory")
    detect.add_argument(
        "--masks",
        action="store_true",
        help="also predict and draw instance masks (GLIPv2 mask head; see --mask-head)",
    )
    detect.add_argument(
        "--mask-head",
        default=None,
        help="directory of mask_head.safetensors + mask_head.json (default: the --model directory)",
    )

    demo = add("demo", "run the main job on the bundled example and say where the results are")
    demo.add_argument("--out", default="glip-demo")

    convert = add("convert", "convert an official checkpoint to safetensors + config.json")
    convert.add_argument("checkpoint")
    convert.add_argument("--config", default=None, help="preset name or official YAML (default: inferred)")
    convert.add_argument(
        "--bert-config", default=None, help="HF BertConfig JSON when the text encoder is not BERT-base"
    )
    convert.add_argument(
        "--trust-pickle", action="store_true", help="allow non-tensor pickles (trusted files only)"
    )
    convert.add_argument("--ema", action="store_true", help="take the 'model_ema' weights")
    convert.add_argument("--non-strict", action="store_true", help="load what fits and report the rest")
    convert.add_argument("--out", required=True)

    train = add("train", "train, fine-tune, prompt-tune or linear-probe on detection / grounding data")
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
    train.add_argument("--val-images", default=None)
    train.add_argument("--out", required=True, help="run directory (checkpoints, metrics, configs)")
    steps = train.add_mutually_exclusive_group()
    steps.add_argument("--max-steps", type=int, default=None)
    steps.add_argument("--epochs", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=2, help="images per process")
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--tune", choices=("full", "prompt", "linear"), default="full")
    train.add_argument("--shots", type=int, default=0, help="k-shot subset per class (ODinW protocol)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train.add_argument(
        "--on-error", choices=("skip", "raise"), default="skip", help="bad records: skip or stop"
    )
    train.add_argument("--device", default="auto")
    train.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides: TrainConfig fields (warmup_steps=100) or model config keys (head.num_blocks=2)",
    )

    add("models", "list released checkpoints and presets")
    pseudo = add("pseudo-label", "pseudo-label image-caption pairs with a teacher (self-training)")
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
    pseudo.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK if available), cpu, cuda")
    from glip.cli_synth_tmp import add_synth_parser
    from glip.eval.cli import add_eval_parser

    add_eval_parser(sub)
    add_synth_parser(sub)
    return parser


# ---------------------------------------------------------------------- helpers
def _resolve_model(name: str | None, config: str | None, device: str) -> Any:
    import torch

    from glip.config import get_preset
    from glip.models.glip import build_model
    from glip.weights.demo import DEMO_MODEL_DIR, demo_model_available
    from glip.weights.loading import load_model, resolve_config

    if name is None and demo_model_available():
        logger.warning(
            "no --model given: using the bundled demo model, which only knows the synthetic world of "
            "coloured shapes (glip synth). Pass --model glip_t (or a checkpoint path) for real images."
        )
        return load_model(DEMO_MODEL_DIR, device=device)
    if name == "demo":
        return load_model(DEMO_MODEL_DIR, device=device)
    if name is None or name.startswith("random:"):
        preset = "tiny_random" if name is None else name.split(":", 1)[1]
        logger.warning(
            "no trained model given: using a RANDOMLY INITIALISED '%s' model (boxes are meaningless). "
            "Pass --model glip_t (or a checkpoint path) for real detections.",
            preset,
        )
        torch.manual_seed(0)
        model = build_model(get_preset(preset))
        model.head.bias0.data.fill_(0.0)  # so a random model shows some boxes
        return model.to(device).eval()
    return load_model(name, config=resolve_config(config) if config else None, device=device)


def _read_classes(args: argparse.Namespace) -> list[str] | None:
    if args.classes is not None:
        return [c.strip() for c in args.classes.split(",") if c.strip()]
    if args.classes_file is not None:
        path = Path(args.classes_file)
        if not path.exists():
            raise FileNotFoundError(f"classes file not found: {path}")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return None


def run_detect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from glip.images import ImageError, expand_image_paths, load_image
    from glip.predictor import GLIPPredictor
    from glip.visualize import draw_prediction

    classes = _read_classes(args)
    phrases = [p.strip() for p in args.phrases.split(";") if p.strip()] if args.phrases else None
    if phrases and args.caption is None:
        raise ValueError("--phrases needs --caption")
    paths = expand_image_paths(args.images)
    if not paths:
        raise ValueError("no images found in " + ", ".join(args.images))
    mask_head = None
    if getattr(args, "masks", False):
        from glip.v2.segmentation import find_mask_head, load_mask_head

        mask_head = load_mask_head(find_mask_head(args.mask_head, args.model))
    predictor = GLIPPredictor(
        _resolve_model(args.model, args.config, args.device), device=args.device, mask_head=mask_head
    )
    # build (and validate) the prompt once, before touching any image
    if classes is not None:
        predictor.class_prompts(classes, args.chunk_size)
    else:
        predictor.caption_prompt(args.caption, phrases)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    used_names: set[str] = set()
    for path in tqdm(paths, desc="detect", unit="img", disable=len(paths) < 2):
        try:
            image = load_image(path)
            prediction = predictor.predict(
                image,
                classes=classes,
                caption=args.caption,
                phrases=phrases,
                threshold=args.threshold,
                chunk_size=args.chunk_size,
                masks=mask_head is not None,
            )
        except ImageError as exc:
            # written, not logged: the message must reach stderr whatever logging is configured
            message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            tqdm.write(f"glip detect: skipped: {message}", file=sys.stderr)
            errors.append({"file": str(path), "error": message})
            continue
        prediction.source = str(path)
        records.append(prediction.to_dict())
        name = path.stem + ".png"
        while name in used_names:
            name = f"{Path(name).stem}_{len(used_names)}.png"
        used_names.add(name)
        draw_prediction(image, prediction).save(out / name)
    (out / "predictions.json").write_text(json.dumps(records, indent=1))
    if errors:
        (out / "errors.json").write_text(json.dumps(errors, indent=1))
    print(
        f"{len(records)} image(s) processed, {len(errors)} skipped; results in {out}/ (predictions.json + PNGs)"
    )
    return 1 if errors else 0


def run_demo(args: argparse.Namespace) -> int:
    from glip.weights.demo import DEMO_EXAMPLES_DIR, DEMO_PROMPT, demo_model_available

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if demo_model_available():
        images = sorted(str(p) for p in DEMO_EXAMPLES_DIR.glob("*.png"))
        print(
            "glip demo: the bundled demo model (the 'tiny' preset trained on the synthetic world of glip synth)"
        )
        names = DEMO_PROMPT.split(",")
        print(
            f"on {len(images)} bundled example image(s), prompt: the {len(names)} seen names of that world "
            f"({', '.join(names[:3])}, ..., {names[-1]})"
        )
        model, threshold = "demo", 0.45
    else:
        import numpy as np
        from PIL import Image, ImageDraw

        rng = np.random.default_rng(0)
        image = Image.fromarray((rng.random((360, 480, 3)) * 60 + 170).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        draw.ellipse([60, 80, 200, 220], fill=(220, 30, 30))
        draw.rectangle([260, 150, 420, 300], fill=(30, 60, 220))
        (out / "inputs").mkdir(exist_ok=True)
        path = out / "inputs" / "example.png"
        image.save(path)
        images = [str(path)]
        print(
            "glip demo: no trained demo model is installed, so this runs a small RANDOMLY INITIALISED model;"
        )
        print("the boxes below show the pipeline working end to end, not real detections.")
        model, threshold = "random:tiny_random", 0.0
    code = run_detect(
        argparse.Namespace(
            images=images,
            classes=DEMO_PROMPT,
            classes_file=None,
            caption=None,
            phrases=None,
            model=model,
            config=None,
            threshold=threshold,
            chunk_size=None,
            batch_size=1,
            device="cpu",
            out=str(out),
        )
    )
    records = json.loads((out / "predictions.json").read_text())
    for record in records:
        print(f"{Path(record['file']).name}: {len(record['detections'])} detection(s)")
        for det in record["detections"][:8]:
            print(f"  {det['phrase']:<16} score {det['score']:.2f} box {[round(v) for v in det['box_xyxy']]}")
    print(f"annotated images and predictions.json in {out}/")
    return code


def run_convert(args: argparse.Namespace) -> int:
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


def _parse_overrides(items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``key=value`` pairs -> (train overrides, model overrides); values parsed with ast.literal_eval."""
    import ast
    import dataclasses

    from glip.engine.train import TrainConfig

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    train, model = {}, {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        (train if key in train_fields else model)[key] = value
    return train, model


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from glip.config import apply_overrides, get_preset
    from glip.data.build import build_training_set
    from glip.data.transforms import TrainTransform
    from glip.engine.train import TrainConfig, fit
    from glip.models.glip import build_model
    from glip.weights.loading import load_model

    train_overrides, model_overrides = _parse_overrides(args.set)
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
        from glip.engine.evaluation import coco_eval_hook

        eval_fn = coco_eval_hook(args.val_ann, args.val_images)
    summary = fit(model, dataset, config, resume=args.resume, eval_fn=eval_fn)
    from glip.engine.distributed import init_distributed

    if init_distributed().is_main:
        from glip.weights.loading import save_model

        save_model(model, Path(args.out) / "model")
        print(
            f"trained {summary['step']} steps; model in {Path(args.out) / 'model'} (glip detect --model ...)"
        )
    return 0


def run_pseudo_label(args: argparse.Namespace) -> int:
    """``glip pseudo-label``: the same command on one CPU or under torchrun (each rank its own shards)."""
    import torch

    from glip.engine.distributed import cleanup, init_distributed
    from glip.selftrain import PseudoLabelConfig, Teacher, merge_shards, pseudo_label, read_lines

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
        device = args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        info = init_distributed(device)
        if device == "cuda":
            device = f"cuda:{info.local_rank}"
        try:
            teacher = Teacher(_resolve_model(args.teacher, args.config, device), device=device)
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


def run_models(_args: argparse.Namespace) -> int:
    from glip.config import PRESETS
    from glip.weights.registry import RELEASED

    print("released checkpoints (glip detect --model NAME; offline: put the file in $GLIP_HOME):")
    for name, info in sorted(RELEASED.items()):
        print(f"  {name:<10} {info.description}  [{info.url}]")
    print("presets (architectures): " + ", ".join(sorted(PRESETS)))
    return 0


def _run_synth(args: argparse.Namespace) -> int:
    from glip.cli_synth_tmp import run_synth

    return run_synth(args)


def _run_eval(args: argparse.Namespace) -> int:
    from glip.eval.cli import run_eval

    return run_eval(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    from glip.images import ImageError
    from glip.text.tokenizer import PromptError
    from glip.weights.loading import CheckpointError

    handlers = {
        "detect": run_detect,
        "demo": run_demo,
        "convert": run_convert,
        "models": run_models,
        "train": run_train,
        "eval": _run_eval,
        "synth": _run_synth,
        "pseudo-label": run_pseudo_label,
    }
    try:
        return handlers[args.command](args)
    except (PromptError, ImageError, CheckpointError, OSError, ValueError, ImportError) as exc:
        # DataError is a ValueError: a bad training file ends here with its file and record named
        if args.verbose:
            raise
        print(f"glip {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
