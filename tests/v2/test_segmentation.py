"""GLIPv2 segmentation training (glip.v2.segmentation): mask targets and paste-back, the second stage, overfitting
(the head itself: tests/models/test_mask_head.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")

from glip.data import CocoGroundingDataset, EvalTransform  # noqa: E402
from glip.models.mask_head import (  # noqa: E402
    MaskHead,
    continuous_boxes,
    load_mask_head,
    paste_masks,
    phrase_features,
)
from glip.v2.segmentation import (  # noqa: E402
    SegmentationTrainConfig,
    mask_loss,
    mask_targets,
    train_segmentation,
)
from tests.models.test_mask_head import SIZE, _forward, setup  # noqa: E402, F401  (the fixture)


def test_mask_targets_and_paste_back_are_inverse() -> None:
    """A disc: sampled on its box grid, then pasted back, it gives the disc again (IoU > 0.95); a full grid
    pastes to exactly the box."""
    yy, xx = np.mgrid[0:60, 0:80]
    disc = torch.from_numpy((xx - 40.5) ** 2 + (yy - 30.5) ** 2 <= 15**2)
    ys, xs = torch.nonzero(disc, as_tuple=True)
    box = torch.tensor([[xs.min(), ys.min(), xs.max(), ys.max()]], dtype=torch.float32)  # legacy xyxy
    grid = mask_targets(disc[None], box, 28)
    assert grid.shape == (1, 28, 28) and set(grid.unique().tolist()) == {0.0, 1.0}
    pasted = paste_masks(grid, continuous_boxes(box), (60, 80))[0]
    iou = (pasted & disc).sum() / (pasted | disc).sum()
    assert iou > 0.95
    full = paste_masks(torch.ones(1, 28, 28), torch.tensor([[10.0, 5.0, 30.0, 25.0]]), (40, 50))[0]
    expected = torch.zeros(40, 50, dtype=torch.bool)
    expected[5:25, 10:30] = True
    assert torch.equal(full, expected)
    clipped = paste_masks(torch.ones(1, 28, 28), torch.tensor([[-5.0, -5.0, 10.0, 10.0]]), (8, 8))[0]
    assert clipped.all()


def test_second_stage_changes_only_the_mask_head(setup, tmp_path: Path) -> None:
    model, dataset = setup["model"], setup["dataset"]
    head = MaskHead(setup["head"].config)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head_before = {k: v.clone() for k, v in head.state_dict().items()}
    result = train_segmentation(
        model,
        head,
        dataset,
        SegmentationTrainConfig(out_dir=str(tmp_path), max_steps=3, batch_size=2, log_every=1, device="cpu"),
    )
    assert result["step"] == 3 and len(result["history"]) == 3
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key  # bit-identical, buffers included
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # its mode is restored
    assert any(not torch.equal(v, head.state_dict()[k]) for k, v in head_before.items())
    loaded = load_mask_head(tmp_path)
    assert all(torch.equal(v, head.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert (tmp_path / "segmentation_metrics.jsonl").read_text().count("\n") == 3
    model.eval()


def test_second_stage_needs_masks(setup) -> None:
    plain = CocoGroundingDataset(
        setup["dir"] / "detection.json", setup["dir"] / "images", EvalTransform(SIZE, 160), num_negatives=2
    )
    with pytest.raises(ValueError, match="no sample of the dataset has instance masks"):
        train_segmentation(
            setup["model"],
            MaskHead(setup["head"].config),
            plain,
            SegmentationTrainConfig(max_steps=1, device="cpu"),
        )


def test_overfits_one_image(setup) -> None:
    """On one synthetic image the mask IoU (pasted masks at the ground-truth boxes) rises above 0.7."""
    model = setup["model"]
    sample = setup["dataset"][2]
    batch, output = _forward(model, [sample])
    target = batch.targets[0]
    words = phrase_features(output.head.fused_text, [target.token_map])
    torch.manual_seed(0)
    head = MaskHead(setup["head"].config)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)

    def iou() -> float:
        with torch.no_grad():
            probs = head(output.head.features, [target.boxes], words, batch.images.tensors).sigmoid()
        pasted = paste_masks(probs, continuous_boxes(target.boxes), tuple(sample.image.shape[-2:]))
        inter = (pasted & target.masks).sum(dim=(1, 2)).float()
        union = (pasted | target.masks).sum(dim=(1, 2)).float()
        return float((inter / union).mean())

    start = iou()
    for _ in range(120):
        loss = mask_loss(head(output.head.features, [target.boxes], words, batch.images.tensors), [target])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = iou()
    assert end > 0.7 and end > start + 0.1, (start, end)
