"""Official key layout: our models map to exactly the official GLIP-T / GLIP-L state-dict manifests."""

from __future__ import annotations

import json

import pytest
import torch

from glip.config import get_preset
from glip.models.glip import build_model
from glip.weights.convert import from_official, official_name_map, to_official


def _manifest(reference_dir, name: str) -> dict[str, tuple[int, ...]]:
    entries = json.loads((reference_dir / f"{name}_state_dict_keys.json").read_text())
    return {key: tuple(shape) for key, shape, _dtype in entries}


@pytest.mark.parametrize("preset,manifest", [("glip_t", "glip_t"), ("glip_l", "glip_l")])
def test_official_keys_and_shapes(reference_dir, preset, manifest):
    with torch.device("meta"):
        model = build_model(get_preset(preset))
    expected = _manifest(reference_dir, manifest)
    mapping = official_name_map(model)
    ours = {mapping[k]: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(ours) - set(expected) == set()
    assert set(expected) - set(ours) == set()
    assert ours == expected
    params = sum(v.numel() for k, v in model.state_dict().items() if "relative_position_index" not in k)
    assert params > 0


def test_late_fusion_tower_indices():
    """GLIP-T (A) has no fusion / BERT layers: the official tower is just the DyConvs, indices 0..5."""
    with torch.device("meta"):
        model = build_model(get_preset("glip_t_a"))
    mapping = official_name_map(model)
    towers = sorted({int(v.split(".")[3]) for v in mapping.values() if ".dyhead_tower." in v})
    assert towers == list(range(6))
    assert not any(".b_attn." in v for v in mapping.values())
    assert mapping["head.blocks.5.dyconv.offset.weight"] == "rpn.head.dyhead_tower.5.offset.weight"


def test_rename_round_trip_tiny():
    torch.manual_seed(0)
    model = build_model(get_preset("tiny_random"))
    official = to_official(model)
    assert "rpn.head.dyhead_tower.0.b_attn.gamma_v" in official
    assert "backbone.fpn.fpn_inner2.weight" in official  # C3 lateral: stride-4 level dropped
    converted, report = from_official(model, official)
    assert report.ok, report.summary()
    own = model.state_dict()
    assert all(torch.equal(converted[k], own[k]) for k in own)


def test_report_lists_problems():
    model = build_model(get_preset("tiny_random"))
    official = to_official(model)
    official.pop("rpn.head.bias0")
    official["rpn.head.bogus"] = torch.zeros(1)
    official["rpn.head.bbox_pred.weight"] = torch.zeros(3, 3)
    _, report = from_official(model, official)
    assert not report.ok
    assert "rpn.head.bias0" in report.missing
    assert report.unexpected == ["rpn.head.bogus"]
    assert report.shape_mismatch[0][0] == "rpn.head.bbox_pred.weight"
    assert "1 missing" in report.summary()
