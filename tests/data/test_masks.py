"""Instance masks in the data path: COCO segmentation codecs, mask transforms, datasets, synthetic masks."""

from __future__ import annotations

import filecmp
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("pycocotools")

from glip.data import CocoGroundingDataset, EvalTransform, TrainTransform  # noqa: E402
from glip.data.masks import (  # noqa: E402
    decode_segmentation,
    encode_rle,
    flip_masks,
    resize_masks,
    segmentation_problem,
)
from glip.data.synthetic.geometry import object_mask  # noqa: E402
from glip.data.synthetic.painting import object_palette  # noqa: E402
from glip.data.synthetic.scene import make_scene  # noqa: E402
from glip.data.synthetic.writers import coco_box, generate  # noqa: E402
from glip.data.types import DataError, GroundingRecord  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _rect_mask(height: int, width: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y1 : y2 + 1, x1 : x2 + 1] = True
    return mask


# ----------------------------------------------------------------------------------------------- codecs


def test_rle_round_trip_and_uncompressed_counts() -> None:
    mask = _rect_mask(7, 5, 1, 2, 3, 5)
    mask[0, 4] = True
    rle = encode_rle(mask)
    assert rle["size"] == [7, 5] and isinstance(rle["counts"], str)
    json.dumps(rle)  # JSON-ready
    assert np.array_equal(decode_segmentation(rle, 7, 5), mask)
    # uncompressed: column-major runs starting with background
    runs, flat, value, length = [], mask.flatten(order="F"), False, 0
    for pixel in flat:
        if pixel == value:
            length += 1
        else:
            runs.append(length)
            value, length = pixel, 1
    runs.append(length)
    assert np.array_equal(decode_segmentation({"size": [7, 5], "counts": runs}, 7, 5), mask)


def test_polygon_decodes_to_its_area() -> None:
    # a 4 x 3 pixel rectangle as a polygon over pixel edges: pycocotools rasterises its interior
    mask = decode_segmentation([[2.0, 1.0, 6.0, 1.0, 6.0, 4.0, 2.0, 4.0]], 8, 10)
    assert mask.shape == (8, 10) and mask.dtype == bool
    ys, xs = np.nonzero(mask)
    assert xs.min() >= 2 and xs.max() <= 6 and ys.min() >= 1 and ys.max() <= 4
    assert 9 <= mask.sum() <= 20


@pytest.mark.parametrize(
    "bad, why",
    [
        ([], "empty"),
        ([[1, 2, 3]], "at least 3"),
        ({"size": [4], "counts": "x"}, "size"),
        ({"size": [2, 2], "counts": [1, 2]}, "sum"),
        ("polygon", "segmentation must be"),
    ],
)
def test_malformed_segmentation_is_named(bad, why) -> None:
    assert why in segmentation_problem(bad)
    with pytest.raises(ValueError, match=why):
        decode_segmentation(bad, 2, 2)


def test_rle_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="not the image"):
        decode_segmentation(encode_rle(np.ones((3, 4), bool)), 4, 3)


def test_resize_and_flip_follow_the_boxes() -> None:
    masks = torch.from_numpy(_rect_mask(10, 20, 2, 4, 7, 7))[None]
    big = resize_masks(masks, (20, 40))  # x2: pixels 4..15 x 8..15
    expected = torch.from_numpy(_rect_mask(20, 40, 4, 8, 15, 15))
    assert torch.equal(big[0], expected)
    flipped = flip_masks(masks)[0]
    # legacy box flip x1' = W - x2 - 1: columns 2..7 -> 12..17
    assert torch.equal(flipped, torch.from_numpy(_rect_mask(10, 20, 12, 4, 17, 7)))
    assert resize_masks(torch.zeros(0, 5, 5, dtype=torch.bool), (3, 3)).shape == (0, 3, 3)


def test_record_checks_mask_count() -> None:
    with pytest.raises(DataError, match="masks"):
        GroundingRecord(
            image=torch.zeros(3, 4, 4),
            boxes=torch.zeros(2, 4),
            labels=torch.ones(2, dtype=torch.int64),
            tokens_positive=[[(0, 1)], [(0, 1)]],
            caption="a b",
            image_id="x",
            masks=torch.zeros(1, 4, 4, dtype=torch.bool),
        )


# ----------------------------------------------------------------------------------------------- datasets


def _coco_with_masks(tmp_path: Path) -> Path:
    image = np.full((40, 60, 3), 128, dtype=np.uint8)
    (tmp_path / "images").mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "a.png")
    left = _rect_mask(40, 60, 5, 10, 14, 29)  # boxes [x, y, w, h] = [5, 10, 10, 20]
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 60, "height": 40}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "bbox": [5, 10, 10, 20],
                "category_id": 1,
                "segmentation": encode_rle(left),
            },
            {  # a polygon: the triangle (30, 5) (50, 5) (30, 25)
                "id": 2,
                "image_id": 1,
                "bbox": [30, 5, 20, 20],
                "category_id": 2,
                "segmentation": [[30, 5, 50, 5, 30, 25]],
            },
        ],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_dataset_reads_masks_and_flips_them(tmp_path: Path) -> None:
    ann = _coco_with_masks(tmp_path)
    plain = CocoGroundingDataset(ann, tmp_path / "images", EvalTransform(40, 100), num_negatives=0)
    assert plain[0].target.masks is None  # opt-in
    same = CocoGroundingDataset(ann, tmp_path / "images", EvalTransform(40, 100), masks=True, num_negatives=0)
    target = same[0].target
    assert target.masks is not None and target.masks.shape == (2, 40, 60) and target.masks.dtype == torch.bool
    cat = int(torch.nonzero(target.labels == 1)[0])
    assert torch.equal(target.masks[cat], torch.from_numpy(_rect_mask(40, 60, 5, 10, 14, 29)))
    # every mask lies inside its box
    for box, mask in zip(target.boxes.tolist(), target.masks):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert xs.min() >= box[0] and xs.max() <= box[2] + 1 and ys.min() >= box[1] and ys.max() <= box[3] + 1

    flip = TrainTransform(min_sizes=(80,), max_size=200, flip_prob=1.0)
    flipped = CocoGroundingDataset(ann, tmp_path / "images", flip, masks=True, num_negatives=0)[0].target
    assert flipped.masks.shape == (2, 80, 120)
    cat = int(torch.nonzero(flipped.labels == 1)[0])
    # x2 resize of columns 5..14 -> 10..29, flipped in a 120-wide image -> 90..109; rows 20..59
    assert torch.equal(flipped.masks[cat], torch.from_numpy(_rect_mask(80, 120, 90, 20, 109, 59)))
    # the legacy box resize scales the inclusive x2 (14 -> 28, not 29), so the box is one pixel tighter
    assert flipped.boxes[cat].tolist() == [91.0, 20.0, 109.0, 58.0]


def test_bad_segmentation_is_a_bad_record(tmp_path: Path) -> None:
    ann = _coco_with_masks(tmp_path)
    data = json.loads(ann.read_text())
    data["annotations"][1]["segmentation"] = [[1, 2]]
    with pytest.raises(DataError, match="polygon"):
        CocoGroundingDataset(data, tmp_path / "images", masks=True, on_error="raise")
    data["annotations"][1]["segmentation"] = []  # empty: no mask, the image then has none
    dataset = CocoGroundingDataset(data, tmp_path / "images", masks=True, num_negatives=0)
    assert dataset[0].target.masks is None


# ----------------------------------------------------------------------------------------------- synthetic


@pytest.fixture(scope="module")
def synth_masks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_masks")
    generate(out, 6, seed=5, size=96, split="train", random_aspect=True, masks=True)
    return out


def test_synthetic_masks_are_the_drawn_pixels(synth_masks: Path) -> None:
    data = json.loads((synth_masks / "detection.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    checked = 0
    for image in data["images"]:
        scene = make_scene(5, "train", image["id"] - 1, 96, True)
        pixels = np.asarray(Image.open(synth_masks / "images" / image["file_name"]).convert("RGB"))
        targets = [o for o in scene.objects if o.role == "target"]
        for ann in by_image.get(image["id"], []):
            mask = decode_segmentation(ann["segmentation"], image["height"], image["width"])
            x, y, w, h = ann["bbox"]
            ys, xs = np.nonzero(mask)
            assert len(xs) >= 0.5 * ann["area"]  # at least half of every object stays visible
            assert xs.min() >= x and xs.max() <= x + w - 1 and ys.min() >= y and ys.max() <= y + h - 1
            obj = next(o for o in targets if coco_box(o.box) == ann["bbox"])
            palette = np.asarray(object_palette(obj), dtype=np.uint8)
            assert (pixels[mask][:, None, :] == palette[None]).all(-1).any(-1).all()  # only its colours
            own = object_mask(obj, image["width"], image["height"])
            assert not (mask & ~own).any()  # inside its own silhouette
            checked += 1
    assert checked >= 6


def test_masks_flag_changes_nothing_else(synth_masks: Path, tmp_path: Path) -> None:
    generate(tmp_path, 6, seed=5, size=96, split="train", random_aspect=True)
    same = [
        "detection.odvg.jsonl",
        "label_map.json",
        "grounding.json",
        "grounding.odvg.jsonl",
        "captions.jsonl",
    ]
    for name in same + ["images/train_000003.png"]:
        assert filecmp.cmp(tmp_path / name, synth_masks / name, shallow=False), name
    plain, masked = (json.loads((d / "detection.json").read_text()) for d in (tmp_path, synth_masks))
    for a, b in zip(plain["annotations"], masked["annotations"]):
        assert "segmentation" not in a
        assert {k: v for k, v in b.items() if k != "segmentation"} == a
    assert "masks" not in json.loads((tmp_path / "vocab.json").read_text())


def test_masks_flag_keeps_old_bytes(tmp_path: Path) -> None:
    """Without --masks, the generator writes exactly what the version before masks wrote (if git has it)."""
    try:
        old = subprocess.run(
            ["git", "-C", str(ROOT), "show", "4522636:glip/data/synthetic.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git history of glip/data/synthetic.py")
    path = tmp_path / "synthetic_before_masks.py"
    path.write_text(old)
    spec = importlib.util.spec_from_file_location("synthetic_before_masks", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.generate(tmp_path / "old", 4, seed=2, size=80, split="synonyms", random_aspect=True)
    generate(tmp_path / "new", 4, seed=2, size=80, split="synonyms", random_aspect=True)
    names = sorted(p.relative_to(tmp_path / "old") for p in (tmp_path / "old").rglob("*") if p.is_file())
    assert names
    for name in names:
        assert filecmp.cmp(tmp_path / "old" / name, tmp_path / "new" / name, shallow=False), name


def test_synth_cli_masks_flag(tmp_path: Path) -> None:
    from glip.cli import main

    assert main(["synth", "--out", str(tmp_path), "--num-images", "2", "--size", "64", "--masks"]) == 0
    data = json.loads((tmp_path / "detection.json").read_text())
    assert data["annotations"] and all("segmentation" in a for a in data["annotations"])
    assert "--masks" in (tmp_path / "README.txt").read_text()
