"""glip.preprocess: padded sizes, grouping by padded size, the rescale back, the official transform."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from glip.config import get_preset
from glip.images import ImageError
from glip.preprocess import (
    box_scale,
    group_by_padded_size,
    pad_batch,
    padded_size,
    preprocess,
    preprocess_images,
    rescale_boxes,
)


def test_padded_size():
    assert padded_size(200, 266) == (224, 288)
    assert padded_size(224, 288) == (224, 288)
    assert padded_size(201, 5, 0) == (201, 5)


def test_group_by_padded_size_keeps_first_appearance_order_and_batch_size():
    sizes = [(100, 120), (200, 200), (97, 100), (110, 128), (200, 193), (64, 64)]
    tensors = [torch.zeros(3, h, w) for h, w in sizes]
    assert group_by_padded_size(tensors, 32, 2) == [[0, 2], [3], [1, 4], [5]]
    assert group_by_padded_size(tensors, 32, 1) == [[0], [2], [3], [1], [4], [5]]
    for group in group_by_padded_size(tensors, 32, 8):  # every batch pads to one size
        assert len({pad_batch([tensors[i]], 32).tensors.shape for i in group}) == 1


def test_rescale_boxes():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    # an image 400 wide, 300 high resized to (H, W) = (150, 200): factor 2 both ways
    assert torch.equal(rescale_boxes(boxes, (400, 300), (150, 200)), boxes * 2)
    assert box_scale((400, 300), (150, 200)).dtype == torch.float32


def test_preprocess_images_is_the_official_transform():
    cfg = get_preset("tiny_random").input
    image = Image.new("RGB", (90, 60), (10, 120, 200))
    [tensor] = preprocess_images([image], cfg)
    expected = preprocess(image, cfg.min_size, cfg.max_size, cfg.pixel_mean, cfg.pixel_std, cfg.to_bgr255)
    assert torch.equal(tensor, expected)


def test_preprocess_images_of_a_batch_in_parallel_keep_their_order():
    cfg = get_preset("tiny_random").input
    images = [Image.new("RGB", (90 + 7 * i, 60 + 5 * i), (10 * i, 120, 200)) for i in range(5)]
    tensors = preprocess_images(images, cfg)
    for image, tensor in zip(images, tensors):
        expected = preprocess(image, cfg.min_size, cfg.max_size, cfg.pixel_mean, cfg.pixel_std, cfg.to_bgr255)
        assert torch.equal(tensor, expected)


def test_preprocess_images_names_an_image_too_elongated():
    cfg = dataclasses.replace(get_preset("tiny_random").input, min_size=160, max_size=256)
    with pytest.raises(ImageError, match="line.png \\(2000x1 pixels\\) is too elongated"):
        preprocess_images([Image.new("RGB", (2000, 1))], cfg, ["line.png"])
