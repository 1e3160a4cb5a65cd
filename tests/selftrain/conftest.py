"""Fixtures for the self-training tests: a tiny generated caption corpus and a small saved teacher."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from glip.config import get_preset
from glip.models.glip import GLIP, build_model

pytest.importorskip("spacy")  # noun phrases need the nlp extra


def small_random_model() -> GLIP:
    """``tiny_random`` on 96-128 px inputs, grounding bias 0 so an untrained model gives scores near 0.5."""
    torch.manual_seed(0)
    config = get_preset("tiny_random")
    config = dataclasses.replace(config, input=dataclasses.replace(config.input, min_size=96, max_size=128))
    model = build_model(config)
    model.head.bias0.data.fill_(0.0)
    return model.eval()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """6 synthetic scenes (96 px): ``captions.jsonl``, ``captions_gt.json``, ``images/``."""
    from glip.data.synthetic.writers import generate

    out = tmp_path_factory.mktemp("corpus")
    generate(out, 6, seed=3, size=96, split="train")
    return out


@pytest.fixture(scope="session")
def random_teacher_dir(tmp_path_factory) -> Path:
    from glip.weights.loading import save_model

    return save_model(small_random_model(), tmp_path_factory.mktemp("teacher") / "model")
