"""Shared by the ``glip`` command tests: one intra-op thread, and the self-training corpus fixtures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from tests.selftrain.conftest import corpus, random_teacher_dir  # noqa: F401  (fixtures)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tensors are small, and on a 2-core machine shared with another busy
    process every 2-thread OpenMP region waits for a scheduler slice (measured 50x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_image(height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.fromarray((rng.random((height, width, 3)) * 80 + 120).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse([width * 0.1, height * 0.2, width * 0.45, height * 0.7], fill=(220, 30, 30))
    draw.rectangle([width * 0.55, height * 0.4, width * 0.9, height * 0.9], fill=(30, 60, 220))
    return image
