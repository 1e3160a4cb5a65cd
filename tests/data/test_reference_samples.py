"""The two samples of the official training-loss reference, rebuilt from raw images + annotations.

shared/reference/README.md "Training-loss reference": image 1 is MDETR-style grounding data, image 2 COCO
detection data converted with ``convert_od_to_grounding_simple`` (no shuffle); official train transform with
MIN_SIZE_TRAIN 200, MAX_SIZE_TRAIN 333, flip probability 0; official ``BatchCollator(32)``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from glip.data import CocoGroundingDataset, MDETRDataset, TrainTransform, collate

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"


@pytest.fixture(scope="module")
def reference() -> dict:
    path = REFERENCE / "train_reference_inputs.pth"
    if not path.exists():
        pytest.skip(f"official reference data not found at {REFERENCE}")
    return torch.load(path, weights_only=True)


@pytest.fixture
def samples(reference, tmp_path):
    raws = reference["raw_images_rgb_uint8_hwc"]
    for i, raw in enumerate(raws):
        Image.fromarray(raw.numpy()).save(tmp_path / f"img{i}.png")  # lossless
    (h0, w0), (h1, w1) = raws[0].shape[:2], raws[1].shape[:2]
    grounding = {
        "images": [
            {"id": 1, "file_name": "img0.png", "height": h0, "width": w0, "caption": reference["captions"][0]}
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "bbox": [20, 90, 130, 70],
                "tokens_positive": [[0, 9]],
                "category_id": 1,
            },
            {
                "id": 2,
                "image_id": 1,
                "bbox": [170, 30, 50, 150],
                "tokens_positive": [[25, 35]],
                "category_id": 1,
            },
        ],
    }
    detection = {
        "images": [{"id": 2, "file_name": "img1.png", "height": h1, "width": w1}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 2, "bbox": [30, 40, 60, 150], "category_id": 1, "iscrowd": 0},
            {"id": 2, "image_id": 2, "bbox": [80, 120, 90, 100], "category_id": 2, "iscrowd": 0},
            {"id": 3, "image_id": 2, "bbox": [120, 20, 40, 100], "category_id": 1, "iscrowd": 0},
        ],
    }
    transform = TrainTransform(min_sizes=(200,), max_size=333, flip_prob=0.0)
    mdetr = MDETRDataset(grounding, tmp_path, transform, on_error="raise")
    coco = CocoGroundingDataset(
        detection, tmp_path, transform, num_negatives=-1, shuffle_classes=False, on_error="raise"
    )
    return [mdetr[0], coco[0]]


def test_samples_match_official(reference, samples):
    assert [s.caption for s in samples] == reference["captions"]
    for sample, image, boxes, labels in zip(
        samples,
        reference["preprocessed_images_chw"],
        reference["gt_boxes_xyxy_resized"],
        reference["gt_labels"],
    ):
        assert sample.image.dtype == torch.float32
        torch.testing.assert_close(sample.image, image, atol=1e-5, rtol=0)
        torch.testing.assert_close(sample.target.boxes, boxes, atol=1e-4, rtol=0)
        assert torch.equal(sample.target.labels, labels.long())
    token_map = torch.cat([s.target.token_map for s in samples])
    assert token_map.shape == (5, 256)
    assert torch.equal(token_map, reference["positive_map"])


def test_collate_matches_official(reference, samples):
    batch = collate(samples)
    torch.testing.assert_close(batch.images.tensors, reference["batched_images"], atol=1e-5, rtol=0)
    assert batch.images.image_sizes == [tuple(s) for s in reference["image_sizes_hw"].tolist()]
    length = batch.input_ids.shape[1]
    assert torch.equal(batch.input_ids, reference["input_ids"][:, :length])
    assert torch.equal(batch.attention_mask, reference["attention_mask"][:, :length])
    assert int(reference["attention_mask"][:, length:].sum()) == 0  # only padding was left out
    assert batch.captions == reference["captions"]
    assert len(batch.targets) == 2 and batch.image_ids == ["1", "2"]
