"""``glip detect`` (images + classes or a caption -> predictions.json + annotated images) and ``glip demo``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from glip.cli.common import DEFAULT_THRESHOLD, add_command, add_device_argument, skip_reporter

DETECT_EXAMPLES = """examples:
  glip detect street.jpg --classes "person,bicycle,traffic light" --out results/
  glip detect photos/ --classes-file lvis_names.txt --chunk-size 40 --model glip_t --out results/
  glip detect dog.jpg --caption "a black dog next to a red ball" --phrases "a black dog;a red ball" --out results/
  glip detect shapes.png --classes "red circle,blue square" --model runs/synth/model --masks --out results/
  glip detect 'photos/*.jpg' https://example.com/cat.png --classes "cat" --model glip_t --out results/
  glip detect photos/ --classes "person" --model glip_t --no-images --batch-size 4 --out results/
"""

DEMO_EXAMPLES = """examples:
  glip demo                 # runs on the bundled example, writes glip-demo/
  glip demo --out my-demo/
"""


DEMO_HELP = "run the main job on the bundled example and say where the results are"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    detect = add_command(
        subparsers, "detect", "detect classes or ground a caption in images", DETECT_EXAMPLES
    )
    detect.add_argument(
        "images",
        nargs="+",
        help="image files, directories, quoted globs ('photos/*.jpg', '**' recursive) or http(s):// URLs",
    )
    prompt = detect.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--classes", help='comma-separated class names, e.g. "cat,dog"')
    prompt.add_argument("--classes-file", help="a file with one class name per line")
    prompt.add_argument("--caption", help="a free-form caption to ground")
    detect.add_argument("--phrases", help='phrases of the caption, ";"-separated (default: noun phrases)')
    detect.add_argument("--model", default=None, help="released name, saved directory or official .pth")
    detect.add_argument("--config", default=None, help="preset name or official YAML for an official .pth")
    detect.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"minimum score (default {DEFAULT_THRESHOLD}, as glip demo)",
    )
    detect.add_argument(
        "--chunk-size", type=int, default=None, help="classes per prompt (default: fill 256 tokens)"
    )
    detect.add_argument(
        "--batch-size", type=int, default=1, help="images per forward pass (same results as one at a time)"
    )
    detect.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="largest image (width x height) to decode; larger files are reported and skipped "
        "(default: PIL's decompression-bomb limit)",
    )
    add_device_argument(detect)
    detect.add_argument("--out", required=True, help="output directory")
    detect.add_argument(
        "--no-images", action="store_true", help="write predictions.json only, no annotated images"
    )
    detect.add_argument(
        "--image-format",
        choices=("png", "jpg"),
        default="png",
        help="format of the annotated images (default png)",
    )
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
    detect.set_defaults(run=run_detect)
    return detect


def add_demo_parser(subparsers: Any) -> argparse.ArgumentParser:
    demo = add_command(subparsers, "demo", DEMO_HELP, DEMO_EXAMPLES)
    demo.add_argument("--out", default="glip-demo", help="output directory (default glip-demo)")
    demo.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"minimum score (default {DEFAULT_THRESHOLD}, as glip detect)",
    )
    add_device_argument(demo)
    demo.set_defaults(run=run_demo)
    return demo


def read_classes(classes: str | None, classes_file: str | None) -> list[str] | None:
    """``--classes "a,b"`` or ``--classes-file`` (one name per line) -> names; None when neither."""
    if classes is not None:
        return [c.strip() for c in classes.split(",") if c.strip()]
    if classes_file is not None:
        path = Path(classes_file)
        if not path.exists():
            raise FileNotFoundError(f"classes file not found: {path}")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return None


def run_detect(args: argparse.Namespace) -> int:
    from glip.detect import detect_to_folder, expand_inputs
    from glip.predictor import GLIPPredictor
    from glip.runtime import resolve_device
    from glip.weights.resolve import resolve_model

    device = resolve_device(args.device)
    classes = read_classes(args.classes, args.classes_file)
    phrases = [p.strip() for p in args.phrases.split(";") if p.strip()] if args.phrases else None
    if phrases and args.caption is None:
        raise ValueError("--phrases needs --caption")
    paths = expand_inputs(args.images)
    if not paths:
        raise ValueError("no images found in " + ", ".join(args.images))
    mask_head = None
    if args.masks:
        from glip.models.mask_head import find_mask_head, load_mask_head
        from glip.weights.demo import bundled_model_dir, default_bundled_name

        name = args.model if args.model is not None else default_bundled_name()
        model_dir = bundled_model_dir(name) if name is not None else None
        mask_head = load_mask_head(find_mask_head(args.mask_head, model_dir or args.model))
    predictor = GLIPPredictor(
        resolve_model(args.model, args.config, device), device=device, mask_head=mask_head
    )
    result = detect_to_folder(
        predictor,
        paths,
        out_dir=args.out,
        classes=classes,
        caption=args.caption,
        phrases=phrases,
        threshold=args.threshold,
        chunk_size=args.chunk_size,
        masks=mask_head is not None,
        batch_size=args.batch_size,
        **({"max_pixels": args.max_pixels} if args.max_pixels is not None else {}),
        on_skip=skip_reporter("detect"),
        progress=False,
        model_name=args.model or "demo",
        write_images=not args.no_images,
        image_format=args.image_format,
        on_image=print_image_line,
    )
    written = "predictions.json" if args.no_images else f"predictions.json + {args.image_format.upper()}s"
    print(
        f"{len(result.records)} image(s) processed, {len(result.errors)} skipped (threshold {args.threshold}); "
        f"results in {result.out_dir}/ ({written})"
    )
    return 1 if result.errors else 0


def image_line(record: dict[str, Any], index: int, total: int) -> str:
    """One line per image, e.g. ``image 2/3 photos/b.jpg: 100x150, 3 detections (2 cat, 1 dog)``."""
    counts: dict[str, int] = {}
    for det in record["detections"]:
        counts[det["phrase"]] = counts.get(det["phrase"], 0) + 1
    found = len(record["detections"])
    summary = ", ".join(f"{n} {phrase}" for phrase, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    what = f"{found} detection{'s' if found != 1 else ''}" + (f" ({summary})" if summary else "")
    return f"image {index}/{total} {record['file']}: {record['width']}x{record['height']}, {what}"


def print_image_line(record: dict[str, Any], index: int, total: int) -> None:
    print(image_line(record, index, total), flush=True)


def _random_example(folder: Path) -> Path:
    """A generated image (a red disc and a blue square on noise) for the demo without a trained model."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((360, 480, 3)) * 60 + 170).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse([60, 80, 200, 220], fill=(220, 30, 30))
    draw.rectangle([260, 150, 420, 300], fill=(30, 60, 220))
    folder.mkdir(exist_ok=True)
    path = folder / "example.png"
    image.save(path)
    return path


def run_demo(args: argparse.Namespace) -> int:
    from glip.detect import detect_to_folder
    from glip.predictor import GLIPPredictor
    from glip.runtime import resolve_device
    from glip.weights import demo
    from glip.weights.resolve import resolve_model

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bundled = demo.default_bundled_name()  # demo_v2 (GLIPv2: boxes + masks) when installed, else demo
    problem = None if bundled is not None else demo.demo_model_problem()
    if bundled is not None:
        images = sorted(demo.DEMO_EXAMPLES_DIR.glob("*.png"))
        print(
            f"glip demo: the bundled demo model '{bundled}' (the 'tiny' preset trained on the synthetic world of "
            "glip synth" + ("; GLIPv2: boxes and instance masks)" if bundled == "demo_v2" else ")")
        )
        names = demo.DEMO_PROMPT.split(",")
        print(
            f"on {len(images)} bundled example image(s), prompt: the {len(names)} seen names of that world "
            f"({', '.join(names[:3])}, ..., {names[-1]}), threshold {args.threshold}"
        )
        model, threshold = bundled, args.threshold
    else:
        images = [_random_example(out / "inputs")]
        print(f"glip demo: {problem}.")
        print(
            "Meanwhile this runs a small RANDOMLY INITIALISED model: the boxes below show the pipeline "
            "working end to end, not real detections (threshold 0: a random model's scores mean nothing)."
        )
        model, threshold = "random:tiny_random", 0.0
    if bundled is not None:  # with the heads saved beside it (the GLIPv2 mask head)
        predictor = GLIPPredictor.from_pretrained(model, device=str(device))
    else:
        predictor = GLIPPredictor(resolve_model(model, device=device), device=device)
    result = detect_to_folder(
        predictor,
        images,
        out_dir=out,
        classes=read_classes(demo.DEMO_PROMPT, None),
        threshold=threshold,
        masks=predictor.mask_head is not None,
        on_skip=skip_reporter("demo"),
        model_name=model,
    )
    print(
        f"{len(result.records)} image(s) processed, {len(result.errors)} skipped; "
        f"results in {result.out_dir}/ (predictions.json + PNGs)"
    )
    for record in result.records:
        print(f"{Path(record['file']).name}: {len(record['detections'])} detection(s)")
        for det in record["detections"][:8]:
            print(f"  {det['phrase']:<16} score {det['score']:.2f} box {[round(v) for v in det['box_xyxy']]}")
    print(f"annotated images and predictions.json in {out}/")
    return 1 if result.errors else 0
