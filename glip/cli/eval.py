"""The ``glip eval`` subcommand: ``add_parser(subparsers)`` and ``run_eval(args) -> int``.

Exit codes: 0 done; 2 bad input (annotation / predictions / suite file, image folder, model, prompt): the
library's ``EvalError`` (a ``ValueError``) and the other input errors reach :func:`glip.cli.main.main`,
which prints them as one line.
Under ``torchrun`` the images are sharded across the processes and rank 0 writes the report.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glip.cli.common import DEVICE_HELP, add_command

if TYPE_CHECKING:  # pragma: no cover
    from glip.eval.common import EvalResult

# glip.eval.common.TASKS, here so that `glip --help` imports no torch (a test checks they agree)
TASKS = ("coco", "lvis", "odinw", "flickr")

logger = logging.getLogger(__name__)

EXAMPLES = """examples:
  glip eval --task coco --model glip_t --ann coco/annotations/instances_val2017.json \\
      --images coco/val2017 --out results/coco
  torchrun --nproc-per-node 4 -m glip.cli eval --task lvis --model glip_t \\
      --ann coco/annotations/lvis_v1_minival_inserted_image_name.json --images coco --out results/lvis
  glip eval --task odinw --model glip_t --ann odinw13.yaml --out results/odinw
  glip eval --task odinw --model glip_t --ann a/valid/annotations.json b/valid/annotations.json \\
      --images a/valid b/valid --out results/two
  glip eval --task flickr --model glip_t --ann mdetr_annotations/final_flickr_separateGT_test.json \\
      --images flickr30k/flickr30k_images --out results/flickr
  glip eval --task coco --predictions results/predictions.json --ann instances_val2017.json --out scored/
  glip eval ... --out results/coco           # run again after an interruption: cached images are skipped
  glip eval --task coco --model runs/synth/model --masks --ann synth/test/detection.json --out results/segm

defaults follow the official GLIP evaluation: COCO/ODinW/Flickr 100 detections per image, one prompt
when the classes fit 256 tokens; LVIS chunks of 40 classes, 300 detections per image, Fixed AP.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    text = "evaluate a model (or a predictions file) on COCO, LVIS, ODinW or Flickr30K Entities"
    parser = add_command(subparsers, "eval", text, EXAMPLES)
    parser.add_argument("--task", choices=TASKS, required=True, help="benchmark protocol")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--model", default=None, help="released name, saved directory, official .pth, or random:PRESET"
    )
    source.add_argument(
        "--predictions",
        nargs="+",
        default=None,
        metavar="FILE",
        help="score existing predictions: COCO results JSON or the predictions.json of `glip detect` "
        "(Flickr: [{image_id, boxes per phrase}]); ODinW: one per dataset",
    )
    parser.add_argument("--config", default=None, help="preset name or official YAML for an official .pth")
    parser.add_argument(
        "--ann",
        nargs="+",
        required=True,
        metavar="FILE",
        help="annotation file (COCO / LVIS / MDETR Flickr JSON); ODinW: a suite YAML/JSON or several COCO files",
    )
    parser.add_argument(
        "--images",
        nargs="+",
        default=None,
        metavar="DIR",
        help="image folder (LVIS: the COCO root); ODinW: one per annotation file (default: the annotation "
        "file's folder, or the images/ folder beside it that glip synth writes)",
    )
    parser.add_argument(
        "--out", default=None, help="report and prediction cache folder (default glip-eval-TASK)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="classes per prompt (default: LVIS 40, others as many as fit 256 tokens; -1: one prompt)",
    )
    parser.add_argument(
        "--detections-per-img",
        type=int,
        default=None,
        help="model's cap per image (default: LVIS 300, others 100)",
    )
    parser.add_argument("--max-images", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--backend",
        choices=("pycocotools", "faster-coco-eval"),
        default="pycocotools",
        help="COCO scorer (same numbers; faster-coco-eval is faster on big sets)",
    )
    parser.add_argument(
        "--lvis-ap",
        choices=("fixed", "standard"),
        default="fixed",
        help="LVIS protocol: fixed (GLIP/MDETR numbers, default) or standard (300 per image)",
    )
    parser.add_argument("--lvis-topk", type=int, default=10000, help="Fixed AP: detections kept per class")
    parser.add_argument("--no-resume", action="store_true", help="ignore cached predictions in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--examples", type=int, default=8, help="images in examples.png (0: none)")
    parser.add_argument(
        "--masks",
        action="store_true",
        help="--task coco: also mask AP (COCOeval segm) of a GLIPv2 mask head's masks (see --mask-head), or of the "
        "masks in a --predictions file (glip detect --masks)",
    )
    parser.add_argument(
        "--mask-head",
        default=None,
        help="directory of mask_head.safetensors + mask_head.json (default: the --model directory)",
    )
    parser.set_defaults(run=run_eval)
    return parser


def _is_suite(path: Path) -> bool:
    if path.suffix.lower() in (".yaml", ".yml"):
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).lstrip()
        if not head.startswith(b"{"):
            return False
        data = json.loads(path.read_text()) if path.stat().st_size < 10_000_000 else None
        return isinstance(data, dict) and "datasets" in data
    except (OSError, json.JSONDecodeError):
        return False


def _one(values: list[str] | None, flag: str, task: str) -> str | None:
    from glip.eval.common import EvalError

    if values is None:
        return None
    if len(values) != 1:
        raise EvalError(f"--task {task} takes one {flag}, got {len(values)}")
    return values[0]


def _print_result(result: EvalResult, out: Path) -> None:
    metrics = result.metrics
    if result.task == "odinw":
        for row in result.per_category:
            ap = row["AP"]
            print(f"  {row['name']:<40} AP {100 * ap:5.1f}" if ap >= 0 else f"  {row['name']:<40} AP  n/a")
        print(f"ODinW average AP over {metrics['num_datasets']} dataset(s): {100 * metrics['AP_avg']:.1f}")
    else:
        count = metrics.get("num_images", metrics.get("num_sentences"))
        what = "sentence(s)" if result.task == "flickr" else "image(s)"
        parts = [
            f"{k} {100 * v:.1f}" if v >= 0 else f"{k} n/a"
            for k, v in metrics.items()
            if isinstance(v, float) and not isinstance(v, bool)
        ]
        print(f"glip eval {result.task}: {count} {what}")
        for start in range(0, len(parts), 6):
            print("  " + "  ".join(parts[start : start + 6]))
    written = ", ".join(Path(p).name for p in result.files.values())
    print(f"report in {out}/ ({written})" if written else f"results in {out}/")


def run_eval(args: argparse.Namespace) -> int:
    """Run ``glip eval``: 0 when done. Bad input raises (``EvalError`` naming the file and record)."""
    from glip.engine.distributed import cleanup, init_distributed
    from glip.eval.common import EvalError, rank_info
    from glip.runtime import resolve_device

    task = args.task
    suite_only = task == "odinw" and len(args.ann) == 1 and _is_suite(Path(args.ann[0]))
    if args.model is None and args.predictions is None and not suite_only:
        raise EvalError("give --model (to run a model) or --predictions (to score a file)")
    if getattr(args, "masks", False) and task != "coco":
        raise EvalError(
            "--masks (mask AP) is for --task coco, with --model or a --predictions file with masks"
        )
    for flag in ("batch_size", "max_images", "detections_per_img", "lvis_topk"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise EvalError(f"--{flag.replace('_', '-')} must be positive, got {value}")
    if args.chunk_size is not None and (args.chunk_size == 0 or args.chunk_size < -1):
        raise EvalError(f"--chunk-size must be positive or -1, got {args.chunk_size}")
    out = Path(args.out or f"glip-eval-{task}")
    anns = [Path(a) for a in args.ann]
    for ann in anns:
        if not ann.is_file():
            raise EvalError(f"annotation file not found: {ann}")
    device = str(resolve_device(args.device))  # cuda:LOCAL_RANK under torchrun
    started = init_distributed(device) if args.predictions is None else None
    try:
        if args.predictions is not None:
            result = _score_files(args, task, anns, out)
        else:
            result = _evaluate_model(args, task, anns, out, device)
        if rank_info().is_main:
            _print_result(result, out)
    finally:
        if started is not None and started.enabled:
            cleanup()
    return 0


def default_image_dir(ann: Path) -> Path:
    """The image folder of ``ann`` when ``--images`` is not given: its own folder, or the ``images/``
    folder beside it (the layout ``glip synth`` writes) when that is where the first image's
    ``file_name`` is."""
    import json

    folder, sub = ann.parent, ann.parent / "images"
    if not sub.is_dir():
        return folder
    try:
        images = json.loads(ann.read_text(encoding="utf-8")).get("images") or [{}]
        first = str(images[0].get("file_name", ""))
    except (OSError, ValueError, AttributeError, TypeError):
        return folder  # the evaluation reads the file again and names what is wrong with it
    if first and not (folder / first).exists() and (sub / first).exists():
        print(f"glip eval: images from {sub}/ (no --images given)")
        return sub
    return folder


def _resolver(args: argparse.Namespace, device: str) -> Any:
    """``name -> LazyModel``: models are read only once the data has been checked."""
    from glip.eval.inference import LazyModel

    def resolve(name: str) -> Any:
        from glip.weights.resolve import resolve_model

        return LazyModel(lambda: resolve_model(name, args.config, device), name)

    return resolve


def _evaluate_model(
    args: argparse.Namespace, task: str, anns: list[Path], out: Path, device: str
) -> EvalResult:
    from glip.eval.common import EvalError
    from glip.eval.options import EvalOptions

    resolve = _resolver(args, device)
    options = EvalOptions(
        max_images=args.max_images,
        batch_size=args.batch_size,
        detections_per_img=args.detections_per_img,
        out_dir=out,
        resume=not args.no_resume,
        progress=not args.no_progress,
        device=device,
        model_name=args.model,
        num_examples=args.examples,
        backend=args.backend,
    )
    if task == "odinw":
        from glip.eval.odinw import evaluate_odinw

        suite: Any
        if len(anns) == 1 and _is_suite(anns[0]):
            if args.images:
                raise EvalError(
                    "--images goes with COCO annotation files, not with a suite (it names its folders)"
                )
            suite = anns[0]
        else:
            images = args.images or [str(default_image_dir(a)) for a in anns]
            if len(images) != len(anns):
                raise EvalError(f"{len(anns)} --ann file(s) but {len(images)} --images folder(s)")
            suite = list(zip(anns, images))
        model = resolve(args.model) if args.model is not None else None  # None: the suite names them
        return evaluate_odinw(model, suite, options, load_model=resolve, chunk_size=args.chunk_size)
    ann = anns[0] if len(anns) == 1 else None
    if ann is None:
        raise EvalError(f"--task {task} takes one --ann file, got {len(anns)}")
    image_arg = _one(args.images, "--images folder", task)
    if task == "coco":
        from glip.eval.coco import evaluate_coco

        image_dir = Path(image_arg) if image_arg else default_image_dir(ann)
        mask_head = None
        if getattr(args, "masks", False):
            from glip.models.mask_head import find_mask_head, load_mask_head

            options = options.replace(masks=True)
            from glip.weights.demo import bundled_model_dir

            model_dir = bundled_model_dir(args.model) if args.model else None
            mask_head = load_mask_head(find_mask_head(args.mask_head, model_dir or args.model))
        return evaluate_coco(
            resolve(args.model), ann, image_dir, options, chunk_size=args.chunk_size, mask_head=mask_head
        )
    if image_arg is None:
        raise EvalError(f"--task {task} needs --images")
    if task == "lvis":
        from glip.eval.lvis import LVIS_CHUNK_SIZE, evaluate_lvis

        return evaluate_lvis(
            resolve(args.model),
            ann,
            Path(image_arg),
            options,
            fixed_ap=args.lvis_ap == "fixed",
            topk=args.lvis_topk,
            chunk_size=args.chunk_size or LVIS_CHUNK_SIZE,
        )
    from glip.eval.flickr import evaluate_flickr

    return evaluate_flickr(resolve(args.model), ann, Path(image_arg), options)


def _score_files(args: argparse.Namespace, task: str, anns: list[Path], out: Path) -> EvalResult:
    from glip.eval.common import EvalError, EvalResult
    from glip.eval.odinw import evaluate_odinw, load_suite, score_detection_file
    from glip.eval.options import EvalOptions

    predictions = [Path(p) for p in args.predictions]
    for path in predictions:
        if not path.is_file():
            raise EvalError(f"predictions file not found: {path}")
    if task == "odinw":
        if len(anns) == 1 and _is_suite(anns[0]):
            datasets, _ = load_suite(anns[0])
            entries = [
                {"name": d.name, "ann": str(d.ann), "images": str(d.images) if d.images else None}
                for d in datasets
            ]
            overrides = [d.override_category for d in datasets]
        else:
            images = args.images or [None] * len(anns)
            if len(images) != len(anns):
                raise EvalError(f"{len(anns)} --ann file(s) but {len(images)} --images folder(s)")
            entries = [
                {"name": f"{i}_{a.stem}", "ann": str(a), "images": im}
                for i, (a, im) in enumerate(zip(anns, images))
            ]
            overrides = [None] * len(anns)
        if len(predictions) != len(entries):
            raise EvalError(
                f"--task odinw: {len(entries)} dataset(s) but {len(predictions)} --predictions file(s)"
            )
        suite = {
            "datasets": [
                {
                    k: v
                    for k, v in {**e, "predictions": str(p), "override_category": o}.items()
                    if v is not None
                }
                for e, p, o in zip(entries, predictions, overrides)
            ]
        }
        for entry in suite["datasets"]:  # paths are already resolved
            entry["ann"] = str(Path(entry["ann"]).resolve())
            entry["predictions"] = str(Path(entry["predictions"]).resolve())
            if "images" in entry:
                entry["images"] = str(Path(entry["images"]).resolve())
        options = EvalOptions(out_dir=out, backend=args.backend, num_examples=args.examples)
        return evaluate_odinw(None, suite, options)
    ann = anns[0] if len(anns) == 1 else None
    if ann is None:
        raise EvalError(f"--task {task} takes one --ann file, got {len(anns)}")
    prediction = _one(args.predictions, "--predictions file", task)
    assert prediction is not None
    image_arg = _one(args.images, "--images folder", task)
    if task == "flickr":
        from glip.eval.flickr import load_flickr_dataset, load_flickr_predictions, score_flickr
        from glip.eval.report import write_flickr_report

        dataset = load_flickr_dataset(ann)
        ranked = load_flickr_predictions(prediction, dataset)
        metrics = score_flickr(dataset, ranked)
        settings = {
            "task": "flickr",
            "predictions": prediction,
            "annotations": str(ann),
            "iou_threshold": 0.5,
        }
        result = EvalResult(task="flickr", metrics=metrics, settings=settings)
        write_flickr_report(
            result, out, dataset, Path(image_arg) if image_arg else None, ranked, args.examples
        )
        return result
    options = EvalOptions(
        out_dir=out,
        backend=args.backend,
        detections_per_img=args.detections_per_img,
        num_examples=args.examples,
        masks=bool(getattr(args, "masks", False)),
    )
    return score_detection_file(
        task, prediction, ann, image_arg, options, fixed_ap=args.lvis_ap == "fixed", topk=args.lvis_topk
    )
