"""Image preprocessing exactly as the official test transform (maskrcnn_benchmark/data/transforms).

Resize (shorter side ``min_size``, longer side at most ``max_size``, int() truncation) with PIL bilinear
(what torchvision's resize does on a PIL image; it antialiases when shrinking) -> RGB [0, 1] -> BGR x 255
-> (x - mean) / std -> zero padding bottom/right to a multiple of 32 *after* normalisation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from glip.config import InputConfig


@dataclass
class ImageBatch:
    """A padded batch. tensors: (B, 3, H_pad, W_pad); image_sizes: unpadded (H, W) per image."""

    tensors: torch.Tensor
    image_sizes: list[tuple[int, int]]

    def to(self, device: torch.device | str) -> ImageBatch:
        return ImageBatch(self.tensors.to(device), self.image_sizes)


def resized_hw(width: int, height: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Official Resize.get_size: the (H, W) an image of ``width`` x ``height`` is resized to.

    >>> resized_hw(240, 180, 200, 333)
    (200, 266)
    """
    size = float(min_size)
    min_original, max_original = float(min(width, height)), float(max(width, height))
    if max_original / min_original * size > max_size:
        size = int(round(max_size * min_original / max_original))
    size = int(size)
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize_image(image: Image.Image, min_size: int, max_size: int) -> Image.Image:
    """Resize a PIL RGB image with the official rule and PIL bilinear resampling."""
    height, width = resized_hw(image.width, image.height, min_size, max_size)
    if (height, width) == (image.height, image.width):
        return image
    return image.resize((width, height), Image.BILINEAR)


def normalize(
    image: Image.Image | np.ndarray,
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    to_bgr255: bool = True,
) -> torch.Tensor:
    """RGB uint8 image (PIL or HWC array) -> (3, H, W) float32 normalised tensor (BGR, 0-255 scale)."""
    array = np.asarray(image, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255.0)  # ToTensor
    if to_bgr255:
        tensor = tensor[[2, 1, 0]] * 255.0
    mean = torch.tensor(pixel_mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(pixel_std, dtype=torch.float32)[:, None, None]
    return (tensor - mean) / std


def padded_size(height: int, width: int, size_divisibility: int = 32) -> tuple[int, int]:
    """(H, W) rounded up to multiples of ``size_divisibility`` (<= 0: unchanged): the size a batch pads to.

    >>> padded_size(200, 266)
    (224, 288)
    """
    if size_divisibility > 0:
        height = -(-height // size_divisibility) * size_divisibility
        width = -(-width // size_divisibility) * size_divisibility
    return height, width


def pad_batch(images: Sequence[torch.Tensor], size_divisibility: int = 32) -> ImageBatch:
    """Zero-pad (3, H_i, W_i) tensors bottom/right into one (B, 3, H, W) batch, H and W multiples of 32."""
    max_h, max_w = padded_size(
        max(int(img.shape[-2]) for img in images),
        max(int(img.shape[-1]) for img in images),
        size_divisibility,
    )
    batch = images[0].new_zeros(len(images), images[0].shape[0], max_h, max_w)
    for slot, img in zip(batch, images):
        slot[:, : img.shape[-2], : img.shape[-1]].copy_(img)
    return ImageBatch(batch, [(int(img.shape[-2]), int(img.shape[-1])) for img in images])


def preprocess(
    image: Image.Image,
    min_size: int = 800,
    max_size: int = 1333,
    pixel_mean: Sequence[float] = (103.530, 116.280, 123.675),
    pixel_std: Sequence[float] = (57.375, 57.120, 58.395),
    to_bgr255: bool = True,
) -> torch.Tensor:
    """PIL RGB image -> (3, H, W) network input before padding (official test transform)."""
    return normalize(resize_image(image.convert("RGB"), min_size, max_size), pixel_mean, pixel_std, to_bgr255)


def check_resizable(width: int, height: int, input_config: InputConfig, source: str | None = None) -> None:
    """:class:`~glip.images.ImageError` when resizing a ``width`` x ``height`` image leaves no row or column."""
    if min(resized_hw(width, height, input_config.min_size, input_config.max_size)) < 1:
        from glip.images import ImageError

        raise ImageError(
            f"{source or 'the image'} ({width}x{height} pixels) is too elongated: "
            f"resizing it to at most {input_config.max_size} pixels long leaves no row or column"
        )


def preprocess_images(
    images: Sequence[Image.Image], input_config: InputConfig, sources: Sequence[str | None] | None = None
) -> list[torch.Tensor]:
    """RGB PIL images -> (3, H_i, W_i) network inputs before padding (official test transform).

    ``input_config``: a :class:`glip.config.InputConfig` (min_size, max_size, pixel_mean, pixel_std,
    to_bgr255). ``sources`` name the images in the error for an image too elongated to resize.
    """
    names = list(sources) if sources is not None else [None] * len(images)
    for image, source in zip(images, names):
        check_resizable(image.width, image.height, input_config, source)
    cfg = input_config

    def one(image: Image.Image) -> torch.Tensor:
        return normalize(
            resize_image(image, cfg.min_size, cfg.max_size), cfg.pixel_mean, cfg.pixel_std, cfg.to_bgr255
        )

    # PIL's resize and torch's element-wise ops release the GIL: the images of a batch go in parallel
    workers = min(len(images), os.cpu_count() or 1)
    if workers <= 1:
        return [one(image) for image in images]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, images))


def group_by_padded_size(
    tensors: Sequence[torch.Tensor], size_divisibility: int, batch_size: int = 1
) -> list[list[int]]:
    """Batches (lists of indices into ``tensors``) whose members all pad to the same size.

    The official fusion attends to the zero padding of a batch, so an image's result depends on the padded
    size: grouping by it makes every image get exactly the result it gets alone. Groups keep the order of
    first appearance; each is cut into pieces of ``batch_size``.
    """
    step = max(int(batch_size), 1)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, tensor in enumerate(tensors):
        key = padded_size(int(tensor.shape[-2]), int(tensor.shape[-1]), size_divisibility)
        groups.setdefault(key, []).append(index)
    return [indices[i : i + step] for indices in groups.values() for i in range(0, len(indices), step)]


def box_scale(image_size: tuple[int, int], tensor_size: tuple[int, int]) -> torch.Tensor:
    """(4,) float32 factors taking xyxy boxes from the resized frame to the original image.

    image_size: (width, height) of the original image; tensor_size: (H, W) of its resized tensor.
    """
    width, height = image_size
    return torch.tensor([width / tensor_size[1], height / tensor_size[0]] * 2, dtype=torch.float32)


def rescale_boxes(
    boxes: torch.Tensor, image_size: tuple[int, int], tensor_size: tuple[int, int]
) -> torch.Tensor:
    """(N, 4) xyxy boxes in the resized frame -> original-image pixels (see :func:`box_scale`)."""
    return boxes * box_scale(image_size, tensor_size)
