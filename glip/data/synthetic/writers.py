"""Writing a synthetic world to disk: COCO / ODVG detection, MDETR / ODVG grounding, caption-only files,
optional instance masks (COCO RLE), ``vocab.json`` and ``README.txt``; :func:`generate` writes them all.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from glip.data.synthetic.captions import build_caption
from glip.data.synthetic.geometry import SceneObject
from glip.data.synthetic.scene import Scene, make_scene, scene_rng, visible_masks
from glip.data.synthetic.vocabulary import SPLITS, detection_categories, split_words, vocabulary

__all__ = ["INFO", "coco_box", "generate", "odvg_box"]

INFO = {"description": "glip synthetic grounding world", "version": "1"}
_IMAGE_NAME = re.compile(r"^(train|test|synonyms|task_A|task_B)_\d{6}\.png$")


def coco_box(box: tuple[int, int, int, int]) -> list[int]:
    """Inclusive ``(x1, y1, x2, y2)`` -> the COCO ``[x, y, w, h]`` this world writes."""
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1 + 1, y2 - y1 + 1]  # legacy: x2 = x + w - 1


def odvg_box(box: tuple[int, int, int, int]) -> list[int]:
    """Inclusive ``(x1, y1, x2, y2)`` -> the ODVG ``[x1, y1, x2, y2]`` (continuous) this world writes."""
    x1, y1, x2, y2 = box
    return [x1, y1, x2 + 1, y2 + 1]  # continuous xyxy; the ODVG loader subtracts 1


def _annotation(
    ann_id: int, image_id: int, obj: SceneObject, category_id: int, **extra: Any
) -> dict[str, Any]:
    return {
        "id": ann_id,
        "image_id": image_id,
        "bbox": coco_box(obj.box),
        "area": obj.area,
        "iscrowd": 0,
        "category_id": category_id,
        **extra,
    }


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from glip.data.masks import encode_rle

    return encode_rle(mask)


class _Detection:
    """A COCO detection file (and optionally its ODVG records) under one category list."""

    def __init__(self, categories: list[tuple[str, str, str | None, str]], shape_only: bool) -> None:
        self.categories = categories
        self.ids = {
            (None if shape_only else colour, shape): i + 1
            for i, (_, _, colour, shape) in enumerate(categories)
        }
        self.shape_only = shape_only
        self.coco: dict[str, Any] = {
            "info": INFO,
            "images": [],
            "annotations": [],
            "categories": [
                {"id": i + 1, "name": name, "supercategory": "shape", "concept": concept}
                for i, (name, concept, _, _) in enumerate(categories)
            ],
        }
        self.odvg: list[dict[str, Any]] = []

    def add(self, image: dict[str, Any], scene: Scene, masks: list[np.ndarray] | None = None) -> None:
        self.coco["images"].append(dict(image))
        instances = []
        for index, obj in enumerate(scene.objects):
            if obj.role != "target":
                continue  # distractors of the task splits are not annotated
            category = self.ids.get((None if self.shape_only else obj.colour, obj.shape))
            if category is None:
                continue  # e.g. rare concepts in the train detection file
            annotations = self.coco["annotations"]
            extra = {} if masks is None else {"segmentation": _rle(masks[index])}
            annotations.append(_annotation(len(annotations) + 1, image["id"], obj, category, **extra))
            name = self.categories[category - 1][0]
            instances.append({"bbox": odvg_box(obj.box), "label": category - 1, "category": name})
        if instances:  # ODVG detection records: images with at least one box
            record = {"filename": image["file_name"], "height": image["height"], "width": image["width"]}
            self.odvg.append({**record, "detection": {"instances": instances}})

    def label_map(self) -> dict[str, str]:
        return {str(i): name for i, (name, *_) in enumerate(self.categories)}


class _Grounding:
    """grounding.json (MDETR) and grounding.odvg.jsonl."""

    def __init__(self) -> None:
        self.mdetr: dict[str, Any] = {
            "info": INFO,
            "images": [],
            "annotations": [],
            "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
        }
        self.odvg: list[dict[str, Any]] = []

    def add(self, image: dict[str, Any], scene: Scene, caption: str, phrases: list) -> None:
        spans = [[list(span)] for _, span, _ in phrases]
        self.mdetr["images"].append(
            {**image, "caption": caption, "tokens_positive_eval": spans, "dataset_name": "synthetic"}
        )
        annotations = self.mdetr["annotations"]
        regions = []
        for text, span, members in phrases:
            for m in members:
                annotations.append(
                    _annotation(
                        len(annotations) + 1,
                        image["id"],
                        scene.objects[m],
                        1,
                        tokens_positive=[list(span)],
                        phrase=text,
                    )
                )
            boxes = [odvg_box(scene.objects[m].box) for m in members]
            regions.append(
                {
                    "bbox": boxes[0] if len(boxes) == 1 else boxes,
                    "phrase": text,
                    "tokens_positive": [list(span)],
                }
            )
        record = {"filename": image["file_name"], "height": image["height"], "width": image["width"]}
        self.odvg.append({**record, "grounding": {"caption": caption, "regions": regions}})


class _Captions:
    """captions.jsonl and its hidden ground truth captions_gt.json (every object, its attributes and span)."""

    def __init__(self, categories: list[tuple[str, str, str | None, str]]) -> None:
        self.ids = {(colour, shape): i + 1 for i, (_, _, colour, shape) in enumerate(categories)}
        self.gt = _Detection(categories, False).coco
        self.lines: list[dict[str, str]] = []

    def add(self, image: dict[str, Any], scene: Scene, caption: str, phrases: list) -> None:
        self.lines.append({"image": image["file_name"], "caption": caption})
        self.gt["images"].append({**image, "caption_text": caption})
        phrase_of = {m: (text, span) for text, span, members in phrases for m in members}
        annotations = self.gt["annotations"]
        for m, obj in enumerate(scene.objects):
            text, span = phrase_of[m]
            attributes = {
                "colour": obj.colour,
                "shape": obj.shape,
                "size": obj.size,
                "texture": obj.texture,
                "role": obj.role,
                "visible": round(obj.visible, 4),
            }
            annotations.append(
                _annotation(
                    len(annotations) + 1,
                    image["id"],
                    obj,
                    self.ids[(obj.colour, obj.shape)],
                    attributes=attributes,
                    tokens_positive=[list(span)],
                    phrase=text,
                )
            )


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=True) + "\n", encoding="utf-8")


def _dump_lines(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records), encoding="utf-8")


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    images = out / "images"
    existing = list(out.iterdir()) if out.exists() else []
    if existing and not overwrite:
        raise FileExistsError(
            f"{out} is not empty (pass overwrite=True / --overwrite to replace a generated set)"
        )
    if existing:  # remove what a previous run wrote, nothing else
        for name in (*_README_FILES, "README.txt"):
            if not name.endswith("/"):  # images/ is emptied below, by name pattern
                (out / name).unlink(missing_ok=True)
        if images.is_dir():
            for path in images.iterdir():
                if _IMAGE_NAME.match(path.name):
                    path.unlink()
    images.mkdir(parents=True, exist_ok=True)


def generate(
    out_dir: str | Path,
    num_images: int,
    seed: int = 0,
    size: int = 320,
    split: str = "train",
    random_aspect: bool = False,
    overwrite: bool = False,
    masks: bool = False,
) -> dict[str, Any]:
    """Write ``num_images`` scenes of ``split`` to ``out_dir`` (see the module docstring and
    ``docs/synthetic.md``). Returns ``{"out_dir", "split", "files": {name: path}, "num_images", "num_objects",
    "detection_boxes", "detection_categories", "grounding_boxes", "grounding_phrases"}``.

    ``masks=True`` (``glip synth --masks``) adds each annotation's exact instance mask to the COCO detection
    files (``detection.json`` and ``detection_all.json`` / ``detection_seen_names.json``) as a compressed RLE
    ``segmentation``: the pixels the object shows in the image (:func:`visible_masks`; needs pycocotools).
    Without it every file is byte-identical to what earlier versions wrote.

    Raises:
        ValueError: bad ``num_images`` / ``seed`` / ``size`` / ``split``.
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is False (with ``overwrite`` only the
            files a previous run writes are replaced).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    if int(num_images) < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if int(size) < 64:
        raise ValueError(f"size must be >= 64 pixels, got {size}")
    if masks:
        from glip.data.masks import pycocotools_mask

        pycocotools_mask()  # ImportError now, before any file is written
    out = Path(out_dir)
    _prepare(out, overwrite)
    words = split_words(split)
    detection = _Detection(detection_categories(split), shape_only=split == "task_A")
    extra_name = {"train": "detection_all.json", "synonyms": "detection_seen_names.json"}.get(split)
    extra = _Detection(detection_categories(split, "all" if split == "train" else "seen_names"), False)
    grounding = _Grounding()
    captions = _Captions(detection_categories(split, "gt"))
    num_objects = 0
    for index in range(int(num_images)):
        scene = make_scene(seed, split, index, size, random_aspect)
        num_objects += len(scene.objects)
        file_name = f"{split}_{index:06d}.png"
        scene.image.save(out / "images" / file_name, format="PNG", compress_level=1)
        image = {"id": index + 1, "file_name": file_name, "width": scene.width, "height": scene.height}
        instance_masks = visible_masks(scene) if masks else None
        detection.add(image, scene, instance_masks)
        if extra_name:
            extra.add(image, scene, instance_masks)
        grounding.add(image, scene, *build_caption(scene, scene_rng(seed, split, index, 1), words))
        caption_rng = scene_rng(seed, split, index, 2)
        captions.add(image, scene, *build_caption(scene, caption_rng, words, mention_all=True))

    files: dict[str, str] = {"images": str(out / "images")}
    outputs: list[tuple[str, Any]] = [("detection.json", detection.coco)]
    if extra_name:
        outputs.append((extra_name, extra.coco))
    outputs += [
        ("detection.odvg.jsonl", detection.odvg),
        ("label_map.json", detection.label_map()),
        ("grounding.json", grounding.mdetr),
        ("grounding.odvg.jsonl", grounding.odvg),
        ("captions.jsonl", captions.lines),
        ("captions_gt.json", captions.gt),
    ]
    for name, data in outputs:
        (_dump_lines if name.endswith(".jsonl") else _dump)(out / name, data)
        files[name] = str(out / name)
    settings = {
        "split": split,
        "seed": int(seed),
        "num_images": int(num_images),
        "size": int(size),
        "random_aspect": bool(random_aspect),
    }
    if masks:  # only then: files written without masks stay byte-identical
        settings["masks"] = True
    vocab = {**settings, **vocabulary(), "files": sorted(n for n in files if n != "images")}
    (out / "vocab.json").write_text(json.dumps(vocab, indent=2) + "\n", encoding="utf-8")
    files["vocab.json"] = str(out / "vocab.json")
    counts = {
        "num_images": int(num_images),
        "num_objects": num_objects,
        "detection_boxes": len(detection.coco["annotations"]),
        "detection_categories": len(detection.categories),
        "grounding_boxes": len(grounding.mdetr["annotations"]),
        "grounding_phrases": sum(len(r["grounding"]["regions"]) for r in grounding.odvg),
    }
    (out / "README.txt").write_text(_readme(settings, counts, extra_name), encoding="utf-8")
    files["README.txt"] = str(out / "README.txt")
    return {"out_dir": str(out), "split": split, "files": files, **counts}


_README_FILES = {
    "images/": "PNG images (every file_name / image path below is relative to images/)",
    "detection.json": "COCO detection (bbox [x, y, w, h], x2 = x + w - 1; 'concept' of each category)",
    "detection_all.json": "COCO detection with the rare categories too (rare concepts as detection data)",
    "detection_seen_names.json": "the boxes of detection.json under the training names (paired control)",
    "detection.odvg.jsonl": "the boxes of detection.json as ODVG detection records (label_map.json)",
    "grounding.json": "MDETR-style grounding: a caption per image, tokens_positive char spans per box",
    "grounding.odvg.jsonl": "the same captions and boxes as ODVG grounding records",
    "captions.jsonl": "caption-only {image, caption} lines (no boxes), for self-training",
    "captions_gt.json": "hidden ground truth of captions.jsonl: every object and its span in that caption",
    "vocab.json": "vocabulary splits: seen / rare concepts, held-out synonyms, task class sets",
}


def _readme(settings: dict[str, Any], counts: dict[str, int], extra_name: str | None) -> str:
    split = settings["split"]
    aspect = " --random-aspect" if settings["random_aspect"] else ""
    aspect += " --masks" if settings.get("masks") else ""
    names = [n for n in _README_FILES if n not in ("detection_all.json", "detection_seen_names.json")]
    if extra_name:
        names.insert(2, extra_name)
    width = max(len(n) for n in names) + 2
    lines = [
        "glip synthetic grounding world",
        f"split {split}, seed {settings['seed']}, {settings['num_images']} images of {settings['size']} px"
        + (" (random aspect)" if settings["random_aspect"] else "")
        + (", with instance masks" if settings.get("masks") else ""),
        f"{counts['num_objects']} objects, {counts['detection_boxes']} detection boxes in "
        f"{counts['detection_categories']} categories, {counts['grounding_phrases']} grounding phrases",
        "",
        *(f"{name.ljust(width)}{_README_FILES[name]}" for name in names),
        "",
        f"regenerate: glip synth --out DIR --split {split} --seed {settings['seed']} "
        f"--num-images {settings['num_images']} --size {settings['size']}{aspect}",
    ]
    if split == "train":
        lines += [
            "train:      glip train --preset tiny --train-ann DIR/detection.json DIR/grounding.json \\",
            "                --train-images DIR/images --out runs/synth",
        ]
    elif split in ("task_A", "task_B"):
        lines += [
            "few-shot:   glip train --preset tiny --init runs/synth/model --train-ann DIR/detection.json \\",
            "                --train-images DIR/images --shots 5 --out runs/synth_" + split,
        ]
    lines += [
        "evaluate:   glip eval --task coco --ann DIR/detection.json --images DIR/images \\",
        "                --model runs/synth/model",
        "See docs/synthetic.md.",
    ]
    return "\n".join(lines) + "\n"
