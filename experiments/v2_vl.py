"""GLIPv2 VL understanding in miniature: grounded VQA, grounded captioning, and detection with vs without
joint VL training at equal steps, on the synthetic world (``glip.data.synthetic.vl``).

    OMP_NUM_THREADS=1 python experiments/v2_vl.py            # ~15 min on one (shared) CPU thread
    python experiments/v2_vl.py --steps 20 --train-images 40 --val-images 10   # smoke run

Two arms from the same initialisation (``tiny`` preset: ImageNet EfficientNet-Lite0 and all-MiniLM-L6-v2,
both frozen; FPN, VL-DyHead and the new heads trained), the same images in the same order:

* ``detection``: detection-as-grounding on the 7 shape names only;
* ``joint``: the same detection loss + grounded VQA (answer CE + entity grounding) + grounded captioning
  (causal next-token CE + word grounding), all on the same images each step.

Measured on held-out images of the ``test`` split: detection AP / AP50 (pycocotools, shape categories) for
both arms; for the joint arm VQA accuracy (overall and per question kind, against the best constant answer
per kind from the training questions), grounded-answer box accuracy (top box of the entity, IoU >= 0.5; on
colour / shape questions, whose entity is one object), caption exact match / token F1 (greedy) and word
grounding accuracy (each shape word of the reference caption, teacher-forced: its top box IoU >= 0.5 with
its object). Writes ``experiments/results/v2_vl.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import time
from pathlib import Path

import torch

from glip.config import get_preset
from glip.data.synthetic.vl import ANSWERS, SyntheticVL
from glip.data.types import collate
from glip.eval.coco import score_coco
from glip.models.captioning import GLIPForCaptioning
from glip.models.glip import build_model
from glip.text.tokenizer import get_tokenizer
from glip.v2.captioning import caption_scores
from glip.v2.vl_train import VLTrainConfig, train_vl
from glip.v2.vqa import GLIPForVQA

logger = logging.getLogger("v2_vl")


def box_iou(a, b) -> float:
    """IoU of two inclusive xyxy boxes (legacy "+1" areas, as the synthetic boxes)."""
    ix = min(a[2], b[2]) - max(a[0], b[0]) + 1
    iy = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / area


def build(args: argparse.Namespace):
    torch.manual_seed(args.seed)
    config = get_preset("tiny")
    glip = build_model(config)
    for module in (glip.text_encoder, glip.backbone):
        for p in module.parameters():
            p.requires_grad_(False)
    torch.manual_seed(args.seed + 1)
    return glip, GLIPForVQA(glip, ANSWERS), GLIPForCaptioning(glip)


def datasets(args: argparse.Namespace, split: str, count: int, seed: int) -> dict[str, SyntheticVL]:
    config = get_preset("tiny")
    detection = SyntheticVL(
        "detection", count, seed=seed, split=split, size=args.size, input_config=config.input
    )
    return {
        "detection": detection,
        "vqa": detection.for_task("vqa"),
        "caption": detection.for_task("caption"),
    }


@torch.no_grad()
def detection_ap(glip, data: SyntheticVL, batch_size: int) -> dict[str, float]:
    names = data.names
    images, annotations, results = [], [], []
    for start in range(0, len(data), batch_size):
        items = [data[k] for k in range(start, min(start + batch_size, len(data)))]
        batch = collate([it.sample for it in items])
        output = glip(batch.images, batch.input_ids, batch.attention_mask)
        label_to_tokens = {i + 1: _tokens(batch, 0, span) for i, span in enumerate(data.prompt.spans)}
        for k, (item, dets) in enumerate(zip(items, glip.postprocess(output, label_to_tokens))):
            image_id = start + k + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": f"{image_id}.png",
                    "width": args_size(item),
                    "height": args_size(item),
                }
            )
            for box, label in zip(item.sample.target.boxes.tolist(), item.sample.target.labels.tolist()):
                x1, y1, x2, y2 = box
                w, h = x2 - x1 + 1, y2 - y1 + 1
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": image_id, "category_id": label, "bbox": [x1, y1, w, h],
                     "area": w * h, "iscrowd": 0}
                )  # fmt: skip
            for box, score, label in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.labels.tolist()):
                x1, y1, x2, y2 = box
                results.append(
                    {"image_id": image_id, "category_id": label, "bbox": [x1, y1, x2 - x1 + 1, y2 - y1 + 1],
                     "score": score}
                )  # fmt: skip
    gt = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }
    metrics = score_coco(gt, results).metrics
    return {"AP": metrics["AP"], "AP50": metrics["AP50"], "num_images": len(images)}


def args_size(item) -> int:
    return int(item.sample.image.shape[-1])


def _tokens(batch, index: int, span) -> list[int]:
    from glip.text.prompts import label_token_dict_from_spans

    caption = batch.captions[index]
    return label_token_dict_from_spans(get_tokenizer()(caption), [[span]], [1], caption=caption)[1]


@torch.no_grad()
def evaluate_vqa(vqa: GLIPForVQA, data: SyntheticVL, train: SyntheticVL, batch_size: int) -> dict:
    prior: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for k in range(len(train)):
        q = train.question(k)
        prior[q.kind][q.answer] += 1
    constant = {kind: counter.most_common(1)[0][0] for kind, counter in prior.items()}
    correct, baseline, total = collections.Counter(), collections.Counter(), collections.Counter()
    boxes_ok, boxes_total = 0, 0
    for start in range(0, len(data), batch_size):
        items = [data[k] for k in range(start, min(start + batch_size, len(data)))]
        batch = collate([it.sample for it in items])
        predictions = vqa.answer(batch.images, batch.captions, [it.question.entity for it in items])
        for item, prediction in zip(items, predictions):
            kind = item.kind
            total[kind] += 1
            correct[kind] += int(prediction.answer == item.answer)
            baseline[kind] += int(constant.get(kind) == item.answer)
            if kind in ("colour", "shape"):
                boxes_total += 1
                dets = prediction.entity_boxes
                if dets is not None and len(dets):
                    top = dets.boxes[int(dets.scores.argmax())].tolist()
                    boxes_ok += int(box_iou(top, item.question.boxes[0]) >= 0.5)
    n = sum(total.values())
    return {
        "accuracy": sum(correct.values()) / n,
        "constant_answer_baseline": sum(baseline.values()) / n,
        "per_kind": {
            kind: {
                "n": total[kind],
                "accuracy": correct[kind] / total[kind],
                "baseline": baseline[kind] / total[kind],
            }
            for kind in sorted(total)
        },
        "entity_box_accuracy": boxes_ok / max(boxes_total, 1),
        "entity_box_questions": boxes_total,
        "num_questions": n,
    }


@torch.no_grad()
def evaluate_captions(captioner: GLIPForCaptioning, data: SyntheticVL, max_length: int, count: int) -> dict:
    tokenizer = get_tokenizer()
    predictions, references, examples = [], [], []
    words_ok, words_total = 0, 0
    for k in range(min(count, len(data))):
        item = data[k]
        batch = collate([item.sample])
        reference = tokenizer(item.caption.text)["input_ids"][1:-1]
        prediction = captioner.generate(batch.images, max_length=max_length)[0]
        predictions.append(prediction.token_ids)
        references.append(reference)
        if len(examples) < 5:
            examples.append({"reference": item.caption.text, "generated": prediction.text})
        grounded = captioner.ground_words(batch.images, reference)  # teacher-forced: the reference words
        words = [w.word for w in grounded]
        position = 0
        for text, _span, obj in item.caption.phrases:  # "a red circle": the shape word is the phrase's last
            position += len(text.split())
            word = grounded[position - 1]
            assert word.word == words[position - 1] == text.split()[-1]
            words_total += 1
            box = data.scene(k).objects[obj].box
            words_ok += int(word.box is not None and box_iou(word.box, box) >= 0.5)
            position += 1 if position < len(words) and words[position] in (",", "and") else 0
    return {
        **caption_scores(predictions, references),
        "word_box_accuracy": words_ok / max(words_total, 1),
        "num_captions": len(predictions),
        "examples": examples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--val-images", type=int, default=60)
    parser.add_argument("--val-captions", type=int, default=30, help="captions decoded (the first images)")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="experiments/results/v2_vl.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    start = time.perf_counter()
    train = datasets(args, "train", args.train_images, args.seed)
    val = datasets(args, "test", args.val_images, args.seed)
    base = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "head_lr": args.head_lr}
    arms = {
        "detection": VLTrainConfig(**base, vqa_weight=0.0, caption_weight=0.0, seed=args.seed),
        "joint": VLTrainConfig(**base, seed=args.seed),
    }
    results: dict = {"settings": vars(args), "arms": {}}
    for name, config in arms.items():
        glip, vqa, captioner = build(args)
        arm_start = time.perf_counter()
        history = train_vl(glip, train, config, vqa=vqa, captioner=captioner)
        arm: dict = {"train_seconds": time.perf_counter() - arm_start, "final_losses": history[-1]}
        arm["detection"] = detection_ap(glip, val["detection"], args.batch_size)
        logger.info("%s detection %s", name, arm["detection"])
        if name == "joint":
            arm["vqa"] = evaluate_vqa(vqa, val["vqa"], train["vqa"], args.batch_size)
            logger.info("vqa %s", arm["vqa"])
            arm["captioning"] = evaluate_captions(captioner, val["caption"], 24, args.val_captions)
            logger.info("captioning %s", arm["captioning"])
        results["arms"][name] = arm
    results["total_seconds"] = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    logger.info("wrote %s (%.0f s)", out, results["total_seconds"])


if __name__ == "__main__":
    main()
