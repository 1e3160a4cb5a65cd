"""Shared fixtures: the official reference data in ../shared/reference (skipped when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE / "reduced_glip_state_dict.pth").exists():
        pytest.skip(f"official reference data not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="session")
def reduced_config(reference_dir: Path):
    from glip.weights.yaml_config import config_from_yaml

    bert = json.loads((reference_dir / "reduced_bert_config.json").read_text())
    return config_from_yaml(reference_dir / "reduced_config.yaml", bert=bert)


@pytest.fixture(scope="session")
def reduced_model(reference_dir: Path, reduced_config):
    from glip import load_model

    return load_model(reference_dir / "reduced_glip_state_dict.pth", config=reduced_config)


@pytest.fixture(scope="session")
def reference_inputs(reference_dir: Path) -> dict:
    return torch.load(reference_dir / "reduced_glip_inputs.pth", weights_only=True)


@pytest.fixture(scope="session")
def reference_outputs(reference_dir: Path) -> dict:
    return torch.load(reference_dir / "reduced_glip_outputs.pth", weights_only=True)
