"""The synthetic grounding world (glip.data.synthetic): determinism, exact boxes / spans, loaders, splits."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glip.data import EvalTransform
from glip.data.build import build_dataset, detect_format
from glip.data.synthetic.geometry import SceneObject, object_mask
from glip.data.synthetic.painting import object_palette
from glip.data.synthetic.scene import MIN_VISIBLE, Scene, make_scene
from glip.data.synthetic.vocabulary import (
    HELD_OUT_WORDS,
    NEW_COLOURS,
    NEW_SHAPES,
    PLURALS,
    RARE_COLOURS,
    RARE_SHAPES,
    RELATION_WORDS,
    RGB,
    SEEN_COLOURS,
    SEEN_SHAPES,
    SIZES,
    SPLITS,
    SYNONYMS,
    TEXTURE_WORDS,
)
from glip.data.synthetic.writers import generate

NUM = 12
SEED = 3
RELATION_OF = {f" {form} ": rel for rel, forms in RELATION_WORDS.items() for form in forms}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, Path]:
    """One generated directory per split (NUM images, seed SEED)."""
    root = tmp_path_factory.mktemp("synth")
    out = {}
    for split in SPLITS:
        out[split] = root / split
        generate(out[split], NUM, seed=SEED, split=split)
    return out


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _load(path: Path):
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return json.loads(path.read_text())


def _split_of(root: Path) -> str:
    return _load(root / "vocab.json")["split"]


# --------------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes(worlds, tmp_path):
    for split in ("train", "task_B"):
        generate(tmp_path / split, NUM, seed=SEED, split=split)
        first, second = _hashes(worlds[split]), _hashes(tmp_path / split)
        assert first == second
        assert len([k for k in first if k.startswith("images/")]) == NUM
    generate(tmp_path / "a1", 3, seed=5, random_aspect=True)
    generate(tmp_path / "a2", 3, seed=5, random_aspect=True)
    assert _hashes(tmp_path / "a1") == _hashes(tmp_path / "a2")


def test_different_seed_different_data(worlds, tmp_path):
    generate(tmp_path / "other", NUM, seed=SEED + 1)
    mine, other = _hashes(worlds["train"]), _hashes(tmp_path / "other")
    for name in ("detection.json", "grounding.json", "captions.jsonl", "images/train_000000.png"):
        assert mine[name] != other[name]
    # the split is part of the stream: train and test images differ for one seed
    train_image = (worlds["train"] / "images" / "train_000000.png").read_bytes()
    test_image = (worlds["test"] / "images" / "test_000000.png").read_bytes()
    assert train_image != test_image


def test_first_images_do_not_depend_on_the_count(worlds, tmp_path):
    generate(tmp_path / "few", 4, seed=SEED)
    for i in range(4):
        name = f"images/train_{i:06d}.png"
        assert (tmp_path / "few" / name).read_bytes() == (worlds["train"] / name).read_bytes()
    assert _load(tmp_path / "few" / "captions.jsonl") == _load(worlds["train"] / "captions.jsonl")[:4]


def test_synonyms_split_draws_the_test_images(worlds):
    for i in range(NUM):
        a = (worlds["test"] / "images" / f"test_{i:06d}.png").read_bytes()
        b = (worlds["synonyms"] / "images" / f"synonyms_{i:06d}.png").read_bytes()
        assert a == b
    syn = _load(worlds["synonyms"] / "detection.json")
    seen = _load(worlds["synonyms"] / "detection_seen_names.json")
    assert [a["bbox"] for a in syn["annotations"]] == [a["bbox"] for a in seen["annotations"]]
    assert [a["category_id"] for a in syn["annotations"]] == [a["category_id"] for a in seen["annotations"]]
    for renamed, original in zip(syn["categories"], seen["categories"]):
        colour, shape = renamed["name"].split()
        assert SYNONYMS[colour] + " " + shape == original["name"]


# ------------------------------------------------------------------------------------- boxes / pixels


@pytest.mark.parametrize("split", SPLITS)
def test_boxes_are_the_tight_boxes_of_the_drawn_pixels(worlds, split):
    root = worlds[split]
    gt = _load(root / "captions_gt.json")
    per_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        per_image.setdefault(ann["image_id"], []).append(ann)
    occluded = 0
    for image in gt["images"]:
        index = image["id"] - 1
        scene = make_scene(SEED, split, index, 320)
        pixels = np.asarray(Image.open(root / "images" / image["file_name"]).convert("RGB"))
        assert pixels.shape == (scene.height, scene.width, 3) == (image["height"], image["width"], 3)
        assert np.array_equal(pixels, np.asarray(scene.image))
        anns = per_image[image["id"]]
        assert len(anns) == len(scene.objects) >= 1
        masks = [object_mask(obj, scene.width, scene.height) for obj in scene.objects]
        for k, (obj, mask, ann) in enumerate(zip(scene.objects, masks, anns)):
            ys, xs = np.nonzero(mask)
            x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
            # covers every pixel of the object's own mask, and is tight (each edge touches the mask)
            assert obj.box == (x1, y1, x2, y2)
            assert ann["bbox"] == [x1, y1, x2 - x1 + 1, y2 - y1 + 1]
            assert ann["area"] == int(mask.sum())
            assert ann["attributes"]["colour"] == obj.colour and ann["attributes"]["shape"] == obj.shape
            # the pixels of the object that nothing drawn later covers have the object's colours
            visible = mask.copy()
            for later in masks[k + 1 :]:
                visible &= ~later
            assert visible.sum() >= MIN_VISIBLE * mask.sum()
            occluded += int(visible.sum() < mask.sum())
            colours = {tuple(int(v) for v in p) for p in pixels[visible]}
            assert colours <= set(object_palette(obj)), (split, index, k, colours)
            assert len(colours) == len(object_palette(obj))  # textures really show
    if split == "train":
        assert occluded > 0  # overlaps happen (amodal boxes)


def test_every_written_box_is_an_object_box(worlds):
    for split, root in worlds.items():
        scenes = [make_scene(SEED, split, i, 320) for i in range(NUM)]
        legacy = {i + 1: {s for s in (o.box for o in scene.objects)} for i, scene in enumerate(scenes)}
        for name in ("detection.json", "detection_all.json", "detection_seen_names.json", "grounding.json"):
            if (root / name).exists():
                for ann in _load(root / name)["annotations"]:
                    x, y, w, h = ann["bbox"]
                    assert (x, y, x + w - 1, y + h - 1) in legacy[ann["image_id"]]
        by_file = {f"{split}_{i:06d}.png": legacy[i + 1] for i in range(NUM)}
        for record in _load(root / "grounding.odvg.jsonl"):
            for region in record["grounding"]["regions"]:
                boxes = region["bbox"] if isinstance(region["bbox"][0], list) else [region["bbox"]]
                for x1, y1, x2, y2 in boxes:
                    assert (x1, y1, x2 - 1, y2 - 1) in by_file[record["filename"]]
        for record in _load(root / "detection.odvg.jsonl"):
            for inst in record["detection"]["instances"]:
                x1, y1, x2, y2 = inst["bbox"]
                assert (x1, y1, x2 - 1, y2 - 1) in by_file[record["filename"]]


# --------------------------------------------------------------------------------------------- spans


def _phrase_matches(phrase: str, objs: list[SceneObject], split: str) -> list[int]:
    """Objects of the scene that the words of ``phrase`` describe."""
    words = [SYNONYMS.get(w, w) if split == "synonyms" else w for w in phrase.split()]
    colour = next(w for w in words if w in RGB)
    shape = next(s for s, plural in PLURALS.items() if words[-1] in (s, plural))
    size = next((w for w in words if w in SIZES), None)
    texture = next((t for t, w in TEXTURE_WORDS.items() if w in words), None)
    return [
        i
        for i, o in enumerate(objs)
        if o.colour == colour
        and o.shape == shape
        and (size is None or o.size == size)
        and (texture is None or o.texture == texture)
    ]


def _holds(relation: str, a: int, b: int, scene: Scene) -> bool:
    """The relations, from the boxes and the rendered masks (drawing order = depth)."""
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = scene.objects[a].box, scene.objects[b].box
    if relation in ("in front of", "behind"):
        front, back = (a, b) if relation == "in front of" else (b, a)
        masks = [object_mask(scene.objects[i], scene.width, scene.height) for i in (front, back)]
        return front > back and bool((masks[0] & masks[1]).any())
    return {
        "left of": ax2 < bx1,
        "right of": ax1 > bx2,
        "above": ay2 < by1,
        "below": ay1 > by2,
    }[relation]


@pytest.mark.parametrize("split", SPLITS)
def test_spans_are_the_phrases_and_the_phrases_are_true(worlds, split):
    root = worlds[split]
    grounding = _load(root / "grounding.json")
    captions = {im["id"]: im["caption"] for im in grounding["images"]}
    for ann in grounding["annotations"]:
        (beg, end),  = ann["tokens_positive"]  # fmt: skip
        assert captions[ann["image_id"]][beg:end] == ann["phrase"]
    relations = 0
    for index, (image, record) in enumerate(zip(grounding["images"], _load(root / "grounding.odvg.jsonl"))):
        caption = image["caption"]
        assert record["grounding"]["caption"] == caption and record["filename"] == image["file_name"]
        regions = record["grounding"]["regions"]
        assert [r["tokens_positive"] for r in regions] == image["tokens_positive_eval"]
        scene = make_scene(SEED, split, index, 320)
        index_of = {o.box: i for i, o in enumerate(scene.objects)}
        assert len(index_of) == len(scene.objects)
        members = []
        for region in regions:
            (beg, end), = region["tokens_positive"]  # fmt: skip
            assert caption[beg:end] == region["phrase"]
            boxes = region["bbox"] if isinstance(region["bbox"][0], list) else [region["bbox"]]
            members.append([index_of[(x1, y1, x2 - 1, y2 - 1)] for x1, y1, x2, y2 in boxes])
        spans = [r["tokens_positive"][0] for r in regions]
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # in caption order, disjoint
        for k, region in enumerate(regions):
            matching = _phrase_matches(region["phrase"], scene.objects, split)
            assert set(members[k]) <= set(matching)
            between = caption[spans[k][1] : spans[k + 1][0]] if k + 1 < len(regions) else ""
            if between in RELATION_OF:  # "A <relation> B" is true
                relations += 1
                (a,), (b,) = members[k], members[k + 1]
                assert _holds(RELATION_OF[between], a, b, scene), (caption, between)
            elif not region["phrase"].startswith("the other"):
                assert sorted(members[k]) == matching, (caption, region["phrase"])  # denotes all it matches
    assert relations > 0
    # caption-only data and its hidden ground truth
    lines = _load(root / "captions.jsonl")
    gt = _load(root / "captions_gt.json")
    by_id = {im["id"]: im for im in gt["images"]}
    for ann in gt["annotations"]:
        image = by_id[ann["image_id"]]
        (beg, end), = ann["tokens_positive"]  # fmt: skip
        assert lines[image["id"] - 1]["caption"] == image["caption_text"]
        assert image["caption_text"][beg:end] == ann["phrase"]
    assert [line["image"] for line in lines] == [im["file_name"] for im in gt["images"]]


# ------------------------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("split", SPLITS)
def test_every_file_loads_with_our_loaders(worlds, split):
    root = worlds[split]
    transform = EvalTransform(min_size=320, max_size=320)
    files = {
        "detection.json": "coco",
        "detection_all.json": "coco",
        "detection_seen_names.json": "coco",
        "detection.odvg.jsonl": "odvg",
        "grounding.json": "mdetr",
        "grounding.odvg.jsonl": "odvg",
        "captions.jsonl": "captions",
        "captions_gt.json": "coco",
    }
    for name, kind in files.items():
        path = root / name
        if not path.exists():
            assert name in ("detection_all.json", "detection_seen_names.json")
            continue
        assert detect_format(path) == kind
        label_map = root / "label_map.json" if name == "detection.odvg.jsonl" else None
        dataset = build_dataset(path, root / "images", transform, on_error="raise", label_map=label_map)
        expected = _expected_boxes(root, name)
        assert len(dataset) == len([k for k, v in expected.items() if v or kind == "captions"])
        for i in range(len(dataset) if split == "train" else min(len(dataset), 5)):
            sample = dataset[i]
            key = str(sample.image_id)  # COCO / MDETR: the image id; JSONL: the file name
            boxes = sorted(tuple(b) for b in sample.target.boxes.tolist())
            assert boxes == sorted(expected[key]), (name, key)
            assert tuple(sample.image.shape[1:]) == (320, 320)
            token_map = sample.target.token_map
            assert token_map.shape[0] == len(boxes)
            assert bool((token_map.sum(dim=1) > 0).all())
            assert bool((sample.target.labels >= 1).all())
            if kind == "captions":
                assert len(boxes) == 0 and sample.caption


def _expected_boxes(root: Path, name: str) -> dict[str, list[tuple[float, ...]]]:
    """Legacy xyxy boxes per image key (COCO / MDETR: image id, JSONL: file name)."""
    data = _load(root / name)
    out: dict[str, list[tuple[float, ...]]] = {}
    if name.endswith(".jsonl"):
        for record in data:
            key = record.get("filename", record.get("image"))
            boxes = []
            if "detection" in record:
                boxes = [b for b in (i["bbox"] for i in record["detection"]["instances"])]
            elif "grounding" in record:
                for region in record["grounding"]["regions"]:
                    boxes += region["bbox"] if isinstance(region["bbox"][0], list) else [region["bbox"]]
            out[key] = [(float(x1), float(y1), float(x2 - 1), float(y2 - 1)) for x1, y1, x2, y2 in boxes]
        return out
    out = {str(im["id"]): [] for im in data["images"]}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        out[str(ann["image_id"])].append((float(x), float(y), float(x + w - 1), float(y + h - 1)))
    return out


def test_detection_prompt_names_the_categories(worlds):
    dataset = build_dataset(worlds["train"] / "detection.json", worlds["train"] / "images", None)
    assert sorted(dataset.class_names.values()) == sorted(
        _load(worlds["train"] / "vocab.json")["categories"]["seen"]
    )
    record = dataset.record(0)
    for spans, label in zip(record.tokens_positive, record.labels.tolist()):
        (beg, end), = spans  # fmt: skip
        assert record.caption[beg:end] == dataset.class_names[label]
    assert isinstance(record.boxes, torch.Tensor)


# -------------------------------------------------------------------------------------------- splits


def _word_set(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_held_out_names_never_appear_in_training_files(worlds):
    held_out = set(HELD_OUT_WORDS)
    for split in ("train", "test"):
        root = worlds[split]
        data_files = [p for p in root.iterdir() if p.is_file() and p.name not in ("vocab.json", "README.txt")]
        assert len(data_files) >= 5, data_files
        for (
            path
        ) in data_files:  # every file the generator writes, vocab.json (which lists them) and README aside
            assert not _word_set(path.read_text()) & held_out, (split, path.name)
        assert not _word_set(" ".join(p.name for p in (root / "images").iterdir())) & held_out
    vocab = _load(worlds["train"] / "vocab.json")
    assert set(vocab["held_out_words"]) == held_out


def test_rare_concepts_only_in_grounding_for_train(worlds):
    root = worlds["train"]
    rare = set(RARE_COLOURS + RARE_SHAPES)
    detection = _load(root / "detection.json")
    names = [c["name"] for c in detection["categories"]]
    assert names == [f"{c} {s}" for c in SEEN_COLOURS for s in SEEN_SHAPES]
    assert not _word_set(" ".join(names)) & rare
    assert not _word_set((root / "label_map.json").read_text()) & rare
    assert not _word_set((root / "detection.odvg.jsonl").read_text()) & rare
    # rare objects are drawn and named in the captions, but have no detection box
    gt = _load(root / "captions_gt.json")
    seen_objects = [
        a
        for a in gt["annotations"]
        if a["attributes"]["colour"] in SEEN_COLOURS and a["attributes"]["shape"] in SEEN_SHAPES
    ]
    assert len(detection["annotations"]) == len(seen_objects) < len(gt["annotations"])
    captions = " ".join(im["caption"] for im in _load(root / "grounding.json")["images"])
    assert _word_set(captions) & rare
    # detection_all.json: the same images with the rare categories too
    full = _load(root / "detection_all.json")
    assert len(full["annotations"]) == len(gt["annotations"])
    assert {c["name"] for c in full["categories"] if c["concept"] == "rare"} == set(
        _load(root / "vocab.json")["categories"]["rare"]
    )


def test_split_categories(worlds):
    test = _load(worlds["test"] / "detection.json")
    assert {c["concept"] for c in test["categories"]} == {"seen", "rare"}
    assert len(test["categories"]) == len(SEEN_COLOURS + RARE_COLOURS) * len(SEEN_SHAPES + RARE_SHAPES)
    # synonyms: no seen colour / size word in its names and captions
    syn_root = worlds["synonyms"]
    replaced = set(SYNONYMS.values())
    for name in (
        "detection.json",
        "grounding.json",
        "grounding.odvg.jsonl",
        "captions.jsonl",
        "label_map.json",
    ):
        assert not _word_set((syn_root / name).read_text()) & replaced, name
    assert _word_set((syn_root / "grounding.json").read_text()) & set(SYNONYMS)
    # task_A: shape-only names of new shapes; distractors unannotated
    for split, names in (
        ("task_A", list(NEW_SHAPES)),
        ("task_B", [f"{c} {s}" for c in NEW_COLOURS for s in SEEN_SHAPES]),
    ):
        root = worlds[split]
        detection = _load(root / "detection.json")
        assert [c["name"] for c in detection["categories"]] == names
        assert {c["concept"] for c in detection["categories"]} == {split}
        roles = [a["attributes"]["role"] for a in _load(root / "captions_gt.json")["annotations"]]
        assert len(detection["annotations"]) == roles.count("target") >= NUM
        words = _word_set((root / "grounding.json").read_text())
        assert words & set(NEW_SHAPES if split == "task_A" else NEW_COLOURS)
