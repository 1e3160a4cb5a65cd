"""Small things many test modules share: one intra-op thread, a drawn test image, a torchrun command line,
the tiny_random model the predictor tests use.

A module that wants the thread fixture imports it (``from tests.helpers import one_thread  # noqa: F401``):
pytest then applies it to that module only.
"""

from __future__ import annotations

import dataclasses
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread while the module runs: the tensors are small, and on a 2-core machine shared with
    another busy process every 2-thread OpenMP region waits for a scheduler slice (measured 50x slower:
    3.7 s instead of 0.07 s per predict call)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_image(height: int, width: int, seed: int = 0) -> Image.Image:
    """A noisy grey image with a red circle on the left and a blue square on the right."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray((rng.random((height, width, 3)) * 80 + 120).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse([width * 0.1, height * 0.2, width * 0.45, height * 0.7], fill=(220, 30, 30))
    draw.rectangle([width * 0.55, height * 0.4, width * 0.9, height * 0.9], fill=(30, 60, 220))
    return image


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(nproc: int = 2) -> list[str]:
    """``python -m torch.distributed.run`` with ``nproc`` local processes on a free port of 127.0.0.1."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    return command + ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]


def tiny_random_model(min_size: int = 160, max_size: int = 256):
    """The seeded tiny_random GLIP at small input sizes, with its detection bias at 0 so that it returns
    boxes."""
    import glip

    torch.manual_seed(0)
    config = glip.get_preset("tiny_random")
    config = dataclasses.replace(
        config, input=dataclasses.replace(config.input, min_size=min_size, max_size=max_size)
    )
    model = glip.build_model(config)
    model.head.bias0.data.fill_(0.0)  # so that a random model produces detections
    return model.eval()
