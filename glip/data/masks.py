"""Instance masks in the training data: COCO ``segmentation`` fields <-> bool arrays, and mask transforms.

COCO stores a mask as polygons (``[[x1, y1, x2, y2, ...], ...]``, pixel-edge coordinates), as uncompressed
RLE (``{"size": [h, w], "counts": [int, ...]}``) or as compressed RLE (``counts`` a string); runs are
column-major (Fortran order) and start with background. Encoding and decoding go through ``pycocotools``
(``pip install '.[eval]' (in the glip checkout)``), so masks read here are exactly the masks COCO evaluation sees.

Transforms follow the boxes (:mod:`glip.data.boxes`): a resize maps the mask to the new pixel grid (area
interpolation, kept where at least half of a pixel is covered), a horizontal flip mirrors the columns (pixel
``i`` -> ``W - 1 - i``, the same map as the legacy box flip ``x1' = W - x2 - 1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "decode_segmentation",
    "encode_rle",
    "flip_masks",
    "pycocotools_mask",
    "resize_masks",
    "segmentation_problem",
    "stack_masks",
]


def pycocotools_mask() -> Any:
    """``pycocotools.mask``; ImportError saying how to install it when it is missing."""
    try:
        from pycocotools import mask as mask_api
    except ImportError:
        raise ImportError(
            "instance masks (COCO 'segmentation') need pycocotools: pip install '.[eval]' (in the glip checkout)"
        ) from None
    return mask_api


def encode_rle(mask: np.ndarray | torch.Tensor) -> dict[str, Any]:
    """(H, W) bool mask -> compressed COCO RLE ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"encode_rle expects one (H, W) mask, got shape {tuple(array.shape)}")
    rle = pycocotools_mask().encode(np.asfortranarray(array.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def segmentation_problem(segmentation: Any) -> str:
    """ "" for a well-formed COCO ``segmentation`` value, else what is wrong with it (for error messages)."""
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if (
            not isinstance(size, list | tuple)
            or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        ):
            return f"RLE 'size' must be [height, width] positive integers, got {size!r}"
        if isinstance(counts, str | bytes):
            return ""
        if isinstance(counts, list | tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts
        ):
            if sum(counts) != size[0] * size[1]:
                return (
                    f"uncompressed RLE counts sum to {sum(counts)}, not height x width = {size[0] * size[1]}"
                )
            return ""
        return "RLE 'counts' must be a string (compressed) or a list of non-negative integers"
    if isinstance(segmentation, list | tuple):
        if not segmentation:
            return "polygon list is empty"
        for polygon in segmentation:
            if (
                not isinstance(polygon, list | tuple)
                or len(polygon) < 6
                or len(polygon) % 2
                or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in polygon
                )
            ):
                return "each polygon must be a flat list of at least 3 finite (x, y) pairs"
        return ""
    return f"segmentation must be polygons (a list) or RLE (an object), got {type(segmentation).__name__}"


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) -> (height, width) bool mask.

    Raises:
        ValueError: malformed value, or an RLE whose ``size`` is not (height, width).
    """
    problem = segmentation_problem(segmentation)
    if problem:
        raise ValueError(problem)
    mask_api = pycocotools_mask()
    if isinstance(segmentation, dict):
        if [int(v) for v in segmentation["size"]] != [int(height), int(width)]:
            raise ValueError(
                f"RLE size {list(segmentation['size'])} is not the image's [height, width] = [{height}, {width}]"
            )
        counts = segmentation["counts"]
        if isinstance(counts, list | tuple):
            rle = mask_api.frPyObjects({"size": [height, width], "counts": list(counts)}, height, width)
        else:
            rle = {
                "size": [height, width],
                "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
            }
    else:
        rle = mask_api.merge(mask_api.frPyObjects([list(map(float, p)) for p in segmentation], height, width))
    return mask_api.decode(rle).astype(bool)


def resize_masks(masks: torch.Tensor, new_hw: tuple[int, int]) -> torch.Tensor:
    """(G, H, W) bool -> (G, new_h, new_w) bool: area interpolation, a pixel is set when >= half covered."""
    if masks.shape[-2:] == tuple(new_hw):
        return masks.clone()
    if masks.shape[0] == 0:
        return torch.zeros(0, *new_hw, dtype=torch.bool)
    resized = F.interpolate(masks[:, None].float(), size=tuple(new_hw), mode="bilinear", antialias=True)
    return resized[:, 0] >= 0.5


def flip_masks(masks: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of (G, H, W) masks: column ``i`` -> ``W - 1 - i`` (matches the legacy box flip)."""
    return masks.flip(-1)


def stack_masks(masks: Sequence[np.ndarray], height: int, width: int) -> torch.Tensor:
    """A list of (H, W) bool arrays -> (G, H, W) bool tensor (``(0, H, W)`` for an empty list)."""
    if not masks:
        return torch.zeros(0, height, width, dtype=torch.bool)
    return torch.from_numpy(np.stack([np.asarray(m, dtype=bool) for m in masks]))
