"""MixedDataset weights / determinism and the few-shot (ODinW) protocol."""

from __future__ import annotations

import random

import pytest

from glip.data import CocoGroundingDataset, MixedDataset, few_shot_dataset, few_shot_subset


class _Named:
    def __init__(self, name: str, size: int) -> None:
        self.name, self.size, self.epoch = name, size, None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[str, int]:
        assert 0 <= index < self.size
        return self.name, index

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def test_mixed_weights_frequencies_and_determinism():
    a, b, c = _Named("a", 10), _Named("b", 1000), _Named("c", 3)
    mixed = MixedDataset([(a, 1.0), (b, 3.0), (c, 0.0)], length=2000, seed=11)
    draws = [mixed[i] for i in range(len(mixed))]
    share = sum(name == "a" for name, _ in draws) / len(draws)
    assert abs(share - 0.25) < 0.035  # binomial std ~0.0097
    assert not any(name == "c" for name, _ in draws)
    assert draws == [mixed[i] for i in range(2000)]
    assert draws == [
        MixedDataset([(a, 1.0), (b, 3.0), (c, 0.0)], length=2000, seed=11)[i] for i in range(2000)
    ]
    assert draws != [
        MixedDataset([(a, 1.0), (b, 3.0), (c, 0.0)], length=2000, seed=12)[i] for i in range(2000)
    ]
    assert len({index for name, index in draws if name == "a"}) == 10  # indices cover the small dataset
    mixed.set_epoch(3)
    assert a.epoch == b.epoch == 3
    assert [mixed[i] for i in range(2000)] != draws
    assert mixed.source(5) == (0 if mixed[5][0] == "a" else 1, mixed[5][1])


def test_mixed_defaults_and_errors():
    assert len(MixedDataset([(_Named("a", 4), 1), (_Named("b", 6), 2)])) == 10
    with pytest.raises(ValueError, match="sum to 0"):
        MixedDataset([(_Named("a", 4), 0)])
    with pytest.raises(ValueError, match="empty"):
        MixedDataset([(_Named("a", 0), 1)])
    with pytest.raises(ValueError, match=">= 0"):
        MixedDataset([(_Named("a", 3), -1)])
    with pytest.raises(IndexError):
        MixedDataset([(_Named("a", 3), 1)])[3]


def test_mixed_with_real_datasets(coco_dir, eval_transform):
    root, data = coco_dir
    detection = CocoGroundingDataset(data, root, eval_transform, num_negatives=1)
    fixed = CocoGroundingDataset(data, root, eval_transform, num_negatives=-1, shuffle_classes=False)
    mixed = MixedDataset([(detection, 1), (fixed, 1)], length=6)
    samples = [mixed[i] for i in range(6)]
    assert all(s.image.shape == (3, 48, 64) for s in samples)
    assert mixed.skipped == 0


def _few_shot_coco(num_images: int = 60, num_categories: int = 6, seed: int = 0) -> dict:
    rng = random.Random(seed)
    categories = [{"id": c + 1, "name": f"thing{c}"} for c in range(num_categories)]
    images, annotations = [], []
    for i in range(num_images):
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 50, "height": 50})
        # category 6 is rare (2 images), the others common
        cats = rng.sample(range(1, num_categories), k=rng.randint(1, 3))
        if i in (17, 42):
            cats.append(num_categories)
        for c in cats:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i + 1, "bbox": [1, 1, 10, 10], "category_id": c}
            )
    images.append({"id": 999, "file_name": "empty.png", "width": 50, "height": 50})  # no annotation
    return {"images": images, "annotations": annotations, "categories": categories, "info": {"v": 1}}


@pytest.mark.parametrize("shots", [1, 3, 5])
def test_few_shot_protocol(shots):
    coco = _few_shot_coco()
    subset = few_shot_subset(coco, shots, seed=3)
    kept = {im["id"] for im in subset["images"]}
    assert subset["info"] == {"v": 1} and subset["categories"] == coco["categories"]
    assert all(a["image_id"] in kept for a in subset["annotations"])
    assert len(subset["annotations"]) == sum(a["image_id"] in kept for a in coco["annotations"])
    for cat in coco["categories"]:
        having = {a["image_id"] for a in coco["annotations"] if a["category_id"] == cat["id"]}
        assert len(having & kept) >= min(shots, len(having))
    assert 999 not in kept
    assert len(kept) < len(coco["images"])
    assert few_shot_subset(coco, shots, seed=3) == subset  # same seed, same subset
    assert coco == _few_shot_coco()  # input untouched


def test_few_shot_seeds_and_greedy_order():
    coco = _few_shot_coco()
    subsets = [frozenset(im["id"] for im in few_shot_subset(coco, 2, seed=s)["images"]) for s in (0, 1, 2, 3)]
    assert len(set(subsets)) > 1
    # seed 0 keeps the sorted order (official SHUFFLE_SEED 0): the first image is always taken
    assert 1 in subsets[0]


def test_few_shot_dataset(tmp_path, helpers):
    coco = _few_shot_coco(num_images=12)
    for image in coco["images"]:
        helpers.write_image(tmp_path / image["file_name"], 50, 50)
    dataset = few_shot_dataset(coco, tmp_path, None, shots=1, seed=5, num_negatives=-1, shuffle_classes=False)
    expected = few_shot_subset(coco, 1, seed=5)
    assert len(dataset) == len(expected["images"])
    assert dataset[0].caption == ". ".join(f"thing{c}" for c in range(6))


def test_few_shot_greedy_by_hand():
    coco = {
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "images": [{"id": i} for i in (4, 3, 2, 1)],
        "annotations": [
            {"image_id": image_id, "category_id": c, "bbox": [0, 0, 5, 5]}
            for image_id, cats in ((1, [1]), (2, [1, 2]), (3, [2]), (4, [1]))
            for c in cats
        ],
    }
    # sorted order 1, 2, 3, 4: 1 (a needs one), 2 (b needs one), then nobody needs 3 or 4
    assert [im["id"] for im in few_shot_subset(coco, 1, seed=0)["images"]] == [2, 1]
    order = sorted([1, 2, 3, 4])
    random.Random(9).shuffle(order)  # official: random.Random(SHUFFLE_SEED).shuffle(sorted ids)
    quota, expected = {1: 1, 2: 1}, set()
    cats = {1: {1}, 2: {1, 2}, 3: {2}, 4: {1}}
    for image_id in order:
        if any(quota[c] > 0 for c in cats[image_id]):
            expected.add(image_id)
            for c in cats[image_id]:
                quota[c] -= 1
    assert {im["id"] for im in few_shot_subset(coco, 1, seed=9)["images"]} == expected


def test_build_dataset_prompt_options(coco_dir, eval_transform, tmp_path):
    import json

    from glip.data.build import build_dataset
    from glip.data.types import DataError

    root, data = coco_dir
    ann = tmp_path / "coco.json"
    ann.write_text(json.dumps(data))
    options = {"num_negatives": -1, "shuffle_classes": False}
    dataset = build_dataset(ann, root, eval_transform, prompt_options=options)
    direct = CocoGroundingDataset(data, root, eval_transform, **options)
    captions = {dataset[i].caption for i in range(len(dataset))}
    assert captions == {direct[i].caption for i in range(len(direct))} and len(captions) == 1  # all, in order
    default = build_dataset(ann, root, eval_transform)  # sampled negatives, shuffled: captions differ
    assert {default[i].caption for i in range(len(default))} != captions
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"image": data["images"][0]["file_name"], "caption": "a cat"}) + "\n")
    with pytest.raises(DataError, match="prompt options apply to COCO"):
        build_dataset(pairs, root, eval_transform, prompt_options=options)
