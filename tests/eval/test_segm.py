"""Mask AP (pycocotools segm) in glip.eval: scoring, evaluate_coco(masks=True), `glip eval --masks`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")

from glip.data.masks import encode_rle  # noqa: E402
from glip.eval.coco import merge_mask_score, score_coco  # noqa: E402
from glip.eval.common import EvalError  # noqa: E402


def _disc(height: int, width: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _gt() -> tuple[dict, list[np.ndarray]]:
    masks = [_disc(60, 80, 20, 20, 10), _disc(60, 80, 55, 35, 15), _disc(60, 80, 30, 30, 12)]
    annotations = []
    for index, (mask, image_id, cat) in enumerate(zip(masks, (1, 1, 2), (1, 2, 1))):
        ys, xs = np.nonzero(mask)
        annotations.append(
            {
                "id": index + 1,
                "image_id": image_id,
                "category_id": cat,
                "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1],
                "area": int(mask.sum()),
                "iscrowd": 0,
                "segmentation": encode_rle(mask),
            }
        )
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 80, "height": 60} for i in (1, 2)],
        "categories": [{"id": 1, "name": "red circle"}, {"id": 2, "name": "blue circle"}],
        "annotations": annotations,
    }
    return data, masks


def _results(data: dict, masks: list[np.ndarray], shift: int = 0) -> list[dict]:
    out = []
    for ann, mask in zip(data["annotations"], masks):
        moved = np.roll(mask, shift, axis=1)
        out.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": ann["bbox"],  # the box stays right: only the mask is wrong when shifted
                "score": 0.9,
                "segmentation": encode_rle(moved),
            }
        )
    return out


def test_perfect_masks_give_mask_ap_one() -> None:
    data, masks = _gt()
    score = score_coco(data, _results(data, masks), iou_type="segm")
    assert score.metrics["AP"] == pytest.approx(1.0)
    assert all(row["AP"] == pytest.approx(1.0) for row in score.per_category)


def test_mask_ap_is_about_the_masks_not_the_boxes() -> None:
    data, masks = _gt()
    results = _results(data, masks, shift=6)  # masks shifted by 6 px, boxes exact
    boxes = score_coco(data, results)
    segm = score_coco(data, results, iou_type="segm")
    assert boxes.metrics["AP"] == pytest.approx(1.0)
    assert segm.metrics["AP"] < 0.6
    merged = merge_mask_score(boxes, segm)
    assert merged.metrics["AP"] == boxes.metrics["AP"] and merged.metrics["mask_AP"] == segm.metrics["AP"]
    assert merged.per_category[0]["mask_AP"] == segm.per_category[0]["AP"]
    assert merged.curves["mask"] == segm.curves


def test_polygon_ground_truth() -> None:
    data, masks = _gt()
    # a square polygon as ground truth, and its exact rasterisation as the prediction
    from pycocotools import mask as mask_api

    polygon = [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]
    data["annotations"][0]["segmentation"] = polygon
    raster = mask_api.decode(mask_api.merge(mask_api.frPyObjects(polygon, 60, 80))).astype(bool)
    score = score_coco(data, _results(data, [raster, *masks[1:]]), iou_type="segm")
    assert score.metrics["AP"] == pytest.approx(1.0)


def test_segm_needs_segmentations() -> None:
    data, masks = _gt()
    results = _results(data, masks)
    with pytest.raises(EvalError, match="every result"):
        score_coco(
            data, [{k: v for k, v in r.items() if k != "segmentation"} for r in results], iou_type="segm"
        )
    del data["annotations"][1]["segmentation"]
    with pytest.raises(EvalError, match="every annotation"):
        score_coco(data, results, iou_type="segm")
    with pytest.raises(ValueError, match="iou_type"):
        score_coco(data, results, iou_type="keypoints")


def test_evaluate_coco_with_masks_and_cli(tmp_path: Path) -> None:
    from glip.config import get_preset
    from glip.data.synthetic.writers import generate
    from glip.eval.coco import evaluate_coco
    from glip.eval.options import EvalOptions
    from glip.models.glip import build_model
    from glip.models.mask_head import MaskHead, MaskHeadConfig, save_mask_head
    from glip.weights.loading import save_model

    generate(tmp_path / "data", 2, seed=0, size=64, split="test", masks=True)
    torch.manual_seed(0)
    config = get_preset("tiny_random")
    model = build_model(config).eval()
    model.head.bias0.data.fill_(0.0)
    head = MaskHead(MaskHeadConfig.for_model(config, num_convs=1, conv_channels=16, embed_dim=16))
    ann = tmp_path / "data" / "detection.json"
    result = evaluate_coco(
        model,
        ann,
        tmp_path / "data" / "images",
        EvalOptions(masks=True, progress=False, out_dir=tmp_path / "ev"),
        mask_head=head,
    )
    for key in ("AP", "mask_AP", "mask_AP50", "mask_AR100"):
        assert key in result.metrics
    predictions = json.loads((tmp_path / "ev" / "predictions.coco.json").read_text())
    assert predictions and all(isinstance(p["segmentation"]["counts"], str) for p in predictions)
    boxes_only = evaluate_coco(model, ann, tmp_path / "data" / "images", EvalOptions(progress=False))
    assert boxes_only.metrics["AP"] == result.metrics["AP"] and "mask_AP" not in boxes_only.metrics

    from glip.cli import main

    save_model(model, tmp_path / "model")
    save_mask_head(head, tmp_path / "model")
    common = ["eval", "--task", "coco", "--ann", str(ann), "--images", str(tmp_path / "data" / "images")]
    code = main(
        [
            *common,
            "--model",
            str(tmp_path / "model"),
            "--masks",
            "--no-progress",
            "--out",
            str(tmp_path / "c"),
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert "mask_AP" in json.dumps(metrics)
    assert main([*common, "--model", str(tmp_path / "data"), "--masks", "--out", str(tmp_path / "d")]) == 2
