"""Diagnostic: can the `tiny` preset learn class names that share words ("red square" vs "red circle")?

The demo model (experiments/demo_model.py) learns to localise and to tell words from separators, but gives every
colour-shape name the same score. This probe separates two explanations on small generated scenes (128 px, two
objects each, no augmentation), same recipe as the overfit test in tests/engine/test_train.py:

* ``--classes 2``: "red square. blue circle" (no shared words; the overfit test's set);
* ``--classes 4``: "red square. red circle. blue square. blue circle" (every word shared by two names).

It trains on ``--train`` scenes, then on ``--test`` unseen scenes reports for each ground-truth object whether
the best-scoring detection overlapping it (IoU >= 0.5) has the right name, and the spread of the phrase scores
there. Prints JSON (and writes it with ``--out``).

    OMP_NUM_THREADS=1 python experiments/composition_probe.py --classes 4 --steps 300
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 170, 40)}
SETS = {
    2: [("red", "square"), ("blue", "circle")],
    4: [("red", "square"), ("red", "circle"), ("blue", "square"), ("blue", "circle")],
    9: [(c, s) for c in ("red", "blue", "green") for s in ("square", "circle", "triangle")],
}


def draw(seed: int, classes: list[tuple[str, str]], size: int) -> tuple[Image.Image, list, list[int]]:
    """Two objects of random classes at seeded, non-overlapping positions; exact boxes."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), (200, 200, 200))
    canvas = ImageDraw.Draw(image)
    boxes: list[tuple[float, float, float, float]] = []
    labels: list[int] = []
    while len(boxes) < 2:
        side = int(rng.integers(size // 4, size // 2))
        x, y = int(rng.integers(0, size - side)), int(rng.integers(0, size - side))
        if any(x < b[2] + 2 and b[0] < x + side + 2 and y < b[3] + 2 and b[1] < y + side + 2 for b in boxes):
            continue
        label = int(rng.integers(0, len(classes)))
        colour, shape = classes[label]
        rect = [x, y, x + side - 1, y + side - 1]
        if shape == "square":
            canvas.rectangle(rect, fill=COLOURS[colour])
        elif shape == "triangle":
            canvas.polygon(
                [(x + side / 2, y), (x + side - 1, y + side - 1), (x, y + side - 1)], fill=COLOURS[colour]
            )
        else:
            canvas.ellipse(rect, fill=COLOURS[colour])
        boxes.append((float(x), float(y), float(x + side - 1), float(y + side - 1)))
        labels.append(label)
    return image, boxes, labels


class Scenes(Dataset):
    def __init__(
        self, classes: list[tuple[str, str]], count: int, size: int, seed: int, negatives: int = -1
    ) -> None:
        from glip.config import get_preset
        from glip.text.prompts import create_positive_map
        from glip.text.tokenizer import get_tokenizer

        self.names = [f"{c} {s}" for c, s in classes]
        self.caption = ". ".join(self.names)
        spans, start = [], 0
        for name in self.names:
            spans.append([(start, start + len(name))])
            start += len(name) + 2
        self.items = [draw(seed + i, classes, size) for i in range(count)]
        config = get_preset("tiny").input
        self.mean, self.std = config.pixel_mean, config.pixel_std
        self.rows = create_positive_map(get_tokenizer()(self.caption), spans, 256, binary=True)
        self.negatives = negatives
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from glip.data.types import Sample
        from glip.losses.grounding import Target
        from glip.preprocess import normalize

        image, boxes, labels = self.items[index]
        if self.negatives >= 0:  # the image's names + N sampled others, shuffled (official RANDOM_SAMPLE_NEG)
            return self._sampled(image, boxes, labels, index)
        target = Target(
            boxes=torch.tensor(boxes),
            labels=torch.tensor([x + 1 for x in labels]),
            token_map=self.rows[labels],
        )
        return Sample(normalize(image, self.mean, self.std), target, self.caption, str(index))

    def _sampled(self, image, boxes, labels, index):
        from glip.data.types import Sample
        from glip.losses.grounding import Target
        from glip.preprocess import normalize
        from glip.text.prompts import create_positive_map
        from glip.text.tokenizer import get_tokenizer

        others = [k for k in range(len(self.names)) if k not in labels]
        chosen = sorted(set(labels)) + list(
            self.rng.choice(others, size=min(self.negatives, len(others)), replace=False)
        )
        order = [int(k) for k in self.rng.permutation(chosen)]
        caption = ". ".join(self.names[k] for k in order)
        spans, start = {}, 0
        for k in order:
            spans[k] = [(start, start + len(self.names[k]))]
            start += len(self.names[k]) + 2
        rows = create_positive_map(get_tokenizer()(caption), [spans[k] for k in order], 256, binary=True)
        row_of = {k: i for i, k in enumerate(order)}
        target = Target(
            boxes=torch.tensor(boxes),
            labels=torch.tensor([x + 1 for x in labels]),
            token_map=rows[[row_of[x] for x in labels]],
        )
        return Sample(normalize(image, self.mean, self.std), target, caption, str(index))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--classes", type=int, choices=sorted(SETS), default=4)
    parser.add_argument("--train", type=int, default=32)
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--freeze-text", type=int, default=1, help="1: frozen MiniLM (as the demo model); 0: train it"
    )
    parser.add_argument("--text-lr", type=float, default=1e-5)
    parser.add_argument("--fused-text-score", type=int, default=1, help="0: score against MiniLM's tokens")
    parser.add_argument(
        "--negatives", type=int, default=-1, help="prompt = the image's names + N others (-1: all names)"
    )
    parser.add_argument("--deep-fusion", type=int, default=1, help="0: late fusion (no X-MHA)")
    parser.add_argument("--layer-scale", type=float, default=None, help="fusion layer scale (tiny: 0.01)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--score-lr-factor",
        type=float,
        default=1.0,
        help="lr factor of the grounding score's text projection",
    )
    parser.add_argument("--save", type=Path, default=None, help="torch.save the trained model here")
    args = parser.parse_args()

    import dataclasses

    from torchvision.ops import box_iou

    from glip.config import get_preset
    from glip.engine.train import TrainConfig, fit
    from glip.models.glip import build_model
    from glip.predictor import GLIPPredictor

    torch.manual_seed(args.seed)
    classes = SETS[args.classes]
    train = Scenes(classes, args.train, args.size, seed=args.seed, negatives=args.negatives)
    test = Scenes(classes, args.test, args.size, seed=10_000 + args.seed)
    preset = get_preset("tiny")
    head = dataclasses.replace(
        preset.head,
        fused_text_for_score=bool(args.fused_text_score),
        deep_fusion=bool(args.deep_fusion),
        layer_scale_init=preset.head.layer_scale_init if args.layer_scale is None else args.layer_scale,
    )
    model = build_model(dataclasses.replace(preset, head=head))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out_dir:
        config = TrainConfig(
            out_dir=out_dir,
            max_steps=args.steps,
            batch_size=2,
            lr=args.lr,
            freeze=("text",) if args.freeze_text else (),
            text_lr=args.text_lr,
            schedule="constant",
            warmup_steps=20,
            progress=False,
            ckpt_every=0,
            log_every=25,
            seed=args.seed,
            lr_factors=(("head.text_proj", args.score_lr_factor), ("head.log_scale", args.score_lr_factor))
            if args.score_lr_factor != 1.0
            else (),
        )
        summary = fit(model, train, config)
        log = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    train_s = time.perf_counter() - started
    model.config = dataclasses.replace(
        model.config, input=dataclasses.replace(model.config.input, min_size=args.size, max_size=args.size)
    )
    if args.save is not None:
        torch.save(model, args.save)
    predictor = GLIPPredictor(model.eval())
    right = found = total = 0
    spreads = []
    for image, boxes, labels in test.items:
        result = predictor.predict(image, classes=test.names, threshold=0.0)
        for box, label in zip(boxes, labels):
            total += 1
            if len(result) == 0:
                continue
            iou = box_iou(result.boxes, torch.tensor([box]))[:, 0]
            hits = (iou >= 0.5).nonzero().flatten()
            if len(hits) == 0:
                continue
            found += 1
            best = hits[result.scores[hits].argmax()]
            right += int(result.labels[best]) == label
            scores = [
                float(result.scores[hits][result.labels[hits] == k].max())
                for k in range(len(classes))
                if bool((result.labels[hits] == k).any())
            ]
            spreads.append(max(scores) - min(scores) if len(scores) > 1 else 0.0)
    report = {
        "command": "python experiments/composition_probe.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k not in ("out", "save") and v is not None
        ),
        "names": test.names,
        "train_seconds": round(train_s, 1),
        "final_losses": {k: round(v, 4) for k, v in log[-1].items() if k.startswith("loss")},
        "objects": total,
        "localised": found,
        "right_name": right,
        "accuracy": round(right / max(total, 1), 3),
        "mean_score_spread_over_names": round(float(np.mean(spreads)) if spreads else 0.0, 4),
        "steps": summary.get("step", args.steps) if isinstance(summary, dict) else args.steps,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
