"""Official YAML -> GLIPConfig: the reduced reference dump, the GLIP-T/L yamls, and refusals by name."""

from __future__ import annotations

import pytest

from glip.config import GLIPConfig, apply_overrides, get_preset
from glip.weights.yaml_config import UnsupportedConfigError, config_from_yaml

GLIP_T_YAML = {
    "MODEL": {
        "META_ARCHITECTURE": "GeneralizedVLRCNN",
        "RPN_ONLY": True,
        "RPN_ARCHITECTURE": "VLDYHEAD",
        "BACKBONE": {"CONV_BODY": "SWINT-FPN-RETINANET", "OUT_CHANNELS": 256, "FREEZE_CONV_BODY_AT": -1},
        "LANGUAGE_BACKBONE": {"FREEZE": False, "MODEL_TYPE": "bert-base-uncased", "MASK_SPECIAL": False},
        "RPN": {
            "USE_FPN": True,
            "ANCHOR_SIZES": "(64, 128, 256, 512, 1024)",
            "ANCHOR_STRIDE": "(8, 16, 32, 64, 128)",
            "ASPECT_RATIOS": "(1.0,)",
            "SCALES_PER_OCTAVE": 1,
        },
        "DYHEAD": {
            "CHANNELS": 256,
            "NUM_CONVS": 6,
            "USE_GN": True,
            "USE_DYRELU": True,
            "USE_DFCONV": True,
            "USE_DYFUSE": True,
            "TOPK": 9,
            "SCORE_AGG": "MEAN",
            "LOG_SCALE": 0.0,
            "FUSE_CONFIG": {
                "EARLY_FUSE_ON": True,
                "TYPE": "MHA-B",
                "USE_CLASSIFICATION_LOSS": False,
                "USE_DOT_PRODUCT_TOKEN_LOSS": True,
                "USE_FUSED_FEATURES_DOT_PRODUCT": True,
                "USE_LAYER_SCALE": True,
            },
            "USE_CHECKPOINT": True,
        },
    },
    "INPUT": {
        "PIXEL_MEAN": [103.530, 116.280, 123.675],
        "PIXEL_STD": [57.375, 57.120, 58.395],
        "MIN_SIZE_TEST": 800,
        "MAX_SIZE_TEST": 1333,
    },
    "AUGMENT": {"MULT_MIN_SIZE_TRAIN": "(480,560,640,720,800)"},
    "DATALOADER": {"SIZE_DIVISIBILITY": 32},
}


def _architecture(config: GLIPConfig) -> dict:
    data = config.to_dict()
    data.pop("name")
    data["head"].pop("use_checkpoint")
    return data


def test_glip_t_yaml_gives_the_preset():
    assert _architecture(config_from_yaml(GLIP_T_YAML)) == _architecture(get_preset("glip_t"))


def test_reduced_reference_dump(reduced_config):
    assert reduced_config.backbone.embed_dim == 32
    assert reduced_config.backbone.depths == (2, 2, 2, 2)
    assert reduced_config.head.num_blocks == 2 and reduced_config.head.channels == 64
    assert reduced_config.text.hidden_size == 64
    assert (reduced_config.input.min_size, reduced_config.input.max_size) == (200, 333)


def test_late_fusion_yaml():
    data = {**GLIP_T_YAML}
    data["MODEL"] = {**GLIP_T_YAML["MODEL"], "DYHEAD": {**GLIP_T_YAML["MODEL"]["DYHEAD"]}}
    data["MODEL"]["DYHEAD"]["FUSE_CONFIG"] = {
        **GLIP_T_YAML["MODEL"]["DYHEAD"]["FUSE_CONFIG"],
        "EARLY_FUSE_ON": False,
        "USE_FUSED_FEATURES_DOT_PRODUCT": False,
    }
    config = config_from_yaml(data)
    assert not config.head.deep_fusion and not config.head.fused_text_for_score


@pytest.mark.parametrize(
    "path,value,name",
    [
        (("MODEL", "DYHEAD", "FUSE_CONFIG", "MLM_LOSS"), True, "MLM_LOSS"),
        (("MODEL", "DYHEAD", "FUSE_CONFIG", "TYPE"), "MHA-S", "FUSE_CONFIG.TYPE"),
        (("MODEL", "BACKBONE", "CONV_BODY"), "R-50-FPN-RETINANET", "CONV_BODY"),
        (
            ("MODEL", "DYHEAD", "FUSE_CONFIG", "USE_CONTRASTIVE_ALIGN_LOSS"),
            True,
            "USE_CONTRASTIVE_ALIGN_LOSS",
        ),
        (("MODEL", "LANGUAGE_BACKBONE", "MODEL_TYPE"), "roberta-base", "MODEL_TYPE"),
    ],
)
def test_unsupported_options_are_refused_by_name(path, value, name):
    import copy

    data = copy.deepcopy(GLIP_T_YAML)
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    with pytest.raises(UnsupportedConfigError, match=name):
        config_from_yaml(data)


def test_config_json_round_trip_and_overrides():
    config = get_preset("tiny")
    assert GLIPConfig.from_dict(config.to_dict()) == config
    changed = apply_overrides(config, {"head.num_blocks": 3, "postprocess.pre_nms_thresh": 0.1})
    assert changed.head.num_blocks == 3 and changed.postprocess.pre_nms_thresh == 0.1
    with pytest.raises(ValueError, match="unknown config key"):
        apply_overrides(config, {"head.nope": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("glip_xl")
