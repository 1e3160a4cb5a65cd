"""Box conventions of the official training data path (maskrcnn_benchmark ``BoxList``, ``TO_REMOVE = 1``).

Boxes are kept as xyxy in the *legacy* pixel-inclusive convention of official GLIP: a COCO box
``[x, y, w, h]`` becomes ``[x, y, x + w - 1, y + h - 1]`` (``ConvertCocoPolysToMask`` / ``BoxList.convert``),
is clamped to ``[0, W - 1] x [0, H - 1]`` and kept only if ``x2 > x1`` and ``y2 > y1``
(``clip_to_image(remove_empty=True)``). Resizing multiplies by ``new / old`` per axis (``BoxList.resize``);
a horizontal flip maps ``x1' = W - x2 - 1``, ``x2' = W - x1 - 1`` (``BoxList.transpose``).
"""

from __future__ import annotations

import torch

__all__ = [
    "TO_REMOVE",
    "clip_legacy",
    "count_outside",
    "clip_to_frame",
    "flip_boxes_legacy",
    "resize_boxes",
    "xywh_to_legacy_xyxy",
    "xyxy_to_legacy_xyxy",
]

TO_REMOVE: int = 1


def xywh_to_legacy_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) COCO ``[x, y, w, h]`` -> legacy xyxy ``[x, y, x + w - 1, y + h - 1]`` (float32)."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).clone()
    boxes[:, 2:] += boxes[:, :2] - TO_REMOVE
    return boxes


def xyxy_to_legacy_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) continuous xyxy (mmdetection / ODVG: ``x2 = x + w``) -> legacy xyxy (``x2 - 1``, ``y2 - 1``), so
    that an ODVG file converted from COCO gives the same boxes as the COCO file itself."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).clone()
    boxes[:, 2:] -= TO_REMOVE
    return boxes


def clip_legacy(boxes: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Official ``clip_to_image(remove_empty=True)`` in the original image frame.

    Returns the clamped boxes (x to ``[0, W - 1]``, y to ``[0, H - 1]``) and the (N,) keep mask
    ``(x2 > x1) & (y2 > y1)`` (boxes with no extent, e.g. ``w <= 1`` in COCO terms or entirely outside the
    image, are dropped).
    """
    boxes = boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=width - TO_REMOVE)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=height - TO_REMOVE)
    keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
    return boxes, keep


def count_outside(boxes: torch.Tensor, width: int, height: int) -> tuple[int, int]:
    """(boxes entirely outside the image, boxes partly outside it) among the legacy xyxy ``boxes`` that have an
    extent (``x2 > x1``, ``y2 > y1``): what :func:`clip_legacy` drops, resp. clamps, beyond the quiet official
    removal of boxes without extent."""
    boxes = boxes.reshape(-1, 4)
    has_extent = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    clipped, keep = clip_legacy(boxes, width, height)
    outside = has_extent & ~keep
    partly = has_extent & keep & (clipped != boxes).any(dim=1)
    return int(outside.sum()), int(partly.sum())


def clip_to_frame(boxes: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """After the transforms: clamp to ``[0, W] x [0, H]`` and keep boxes with ``x2 > x1``, ``y2 > y1`` that
    overlapped the image before clamping.

    The bound is ``W`` (not ``W - 1``) on purpose: official resized boxes reach ``(W0 - 1) * W / W0``, which
    exceeds ``W - 1`` when shrinking; clamping at ``W`` leaves every unflipped official box untouched and only
    moves a flipped box's ``x1 = W / W0 - 1`` (slightly negative when shrinking) to 0.
    """
    boxes = boxes.reshape(-1, 4)
    inside = (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < width) & (boxes[:, 1] < height)
    clipped = boxes.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(min=0, max=width)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(min=0, max=height)
    keep = inside & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped, keep


def resize_boxes(boxes: torch.Tensor, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> torch.Tensor:
    """Official ``BoxList.resize``: x times ``new_w / old_w``, y times ``new_h / old_h`` (float32)."""
    ratio_w = float(new_hw[1]) / float(old_hw[1])
    ratio_h = float(new_hw[0]) / float(old_hw[0])
    if ratio_w == ratio_h:
        return boxes * ratio_w
    scale = torch.tensor([ratio_w, ratio_h, ratio_w, ratio_h], dtype=boxes.dtype)
    return boxes * scale


def flip_boxes_legacy(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Official ``BoxList.transpose(FLIP_LEFT_RIGHT)``: ``x1' = W - x2 - 1``, ``x2' = W - x1 - 1``."""
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2] - TO_REMOVE
    flipped[:, 2] = width - boxes[:, 0] - TO_REMOVE
    return flipped
