"""Official GLIP YAML config (yacs dump or the repo's configs/*.yaml) -> :class:`glip.config.GLIPConfig`.

Only the options this implementation reproduces are read. Any option that would change the model and that
we do not implement is refused *by name* (``UnsupportedConfigError``), never silently ignored. Keys absent
from a file take the official defaults (maskrcnn_benchmark/config/defaults.py), as yacs would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from glip.config import (
    BERT_BASE_UNCASED,
    AnchorConfig,
    GLIPConfig,
    HeadConfig,
    InputConfig,
    PostprocessConfig,
    SwinConfig,
    TextConfig,
)


class UnsupportedConfigError(ValueError):
    """The YAML asks for an option this implementation does not reproduce."""


# Official defaults for the keys we read (maskrcnn_benchmark/config/defaults.py and the GLIP yamls).
_DEFAULTS: dict[str, Any] = {
    "MODEL.META_ARCHITECTURE": "GeneralizedVLRCNN",
    "MODEL.RPN_ONLY": True,
    "MODEL.RPN_ARCHITECTURE": "VLDYHEAD",
    "MODEL.BACKBONE.CONV_BODY": "SWINT-FPN-RETINANET",
    "MODEL.BACKBONE.OUT_CHANNELS": 256,
    "MODEL.BACKBONE.FREEZE_CONV_BODY_AT": 2,
    "MODEL.SWINT.EMBED_DIM": 96,
    "MODEL.SWINT.DEPTHS": (2, 2, 6, 2),
    "MODEL.SWINT.NUM_HEADS": (3, 6, 12, 24),
    "MODEL.SWINT.WINDOW_SIZE": 7,
    "MODEL.SWINT.MLP_RATIO": 4,
    "MODEL.SWINT.DROP_PATH_RATE": 0.2,
    "MODEL.SWINT.APE": False,
    "MODEL.SWINT.VERSION": "v1",
    "MODEL.SWINT.OUT_NORM": True,
    "MODEL.SWINT.LAYER_SCALE": 0,
    "MODEL.LANGUAGE_BACKBONE.MODEL_TYPE": "bert-base-uncased",
    "MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE": "bert-base-uncased",
    "MODEL.LANGUAGE_BACKBONE.FREEZE": False,
    "MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN": 256,
    "MODEL.LANGUAGE_BACKBONE.N_LAYERS": 1,
    "MODEL.LANGUAGE_BACKBONE.MASK_SPECIAL": False,
    "MODEL.LANGUAGE_BACKBONE.PAD_MAX": True,
    "MODEL.FPN.DROP_BLOCK": True,
    "MODEL.FPN.DROP_PROB": 0.3,
    "MODEL.FPN.DROP_SIZE": 3,
    "MODEL.DYHEAD.CHANNELS": 256,
    "MODEL.DYHEAD.NUM_CONVS": 4,
    "MODEL.DYHEAD.USE_GN": False,
    "MODEL.DYHEAD.USE_DYRELU": False,
    "MODEL.DYHEAD.USE_DFCONV": False,
    "MODEL.DYHEAD.USE_DYFUSE": False,
    "MODEL.DYHEAD.NUM_CLASSES": 81,
    "MODEL.DYHEAD.PRIOR_PROB": 0.01,
    "MODEL.DYHEAD.LOG_SCALE": 0.0,
    "MODEL.DYHEAD.SCORE_AGG": "MEAN",
    "MODEL.DYHEAD.CONV_FUNC": "",
    "MODEL.DYHEAD.GROUPS": 1,
    "MODEL.DYHEAD.COSINE_SCALE": -1.0,
    "MODEL.DYHEAD.USE_CHECKPOINT": False,
    "MODEL.GROUP_NORM.NUM_GROUPS": 16,
    "MODEL.DYHEAD.FUSE_CONFIG.EARLY_FUSE_ON": False,
    "MODEL.DYHEAD.FUSE_CONFIG.TYPE": "",
    "MODEL.DYHEAD.FUSE_CONFIG.USE_FUSED_FEATURES_DOT_PRODUCT": False,
    "MODEL.DYHEAD.FUSE_CONFIG.USE_DOT_PRODUCT_TOKEN_LOSS": False,
    "MODEL.DYHEAD.FUSE_CONFIG.USE_LAYER_SCALE": True,
    "MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER": False,
    "MODEL.RPN.ANCHOR_SIZES": (32, 64, 128, 256, 512),
    "MODEL.RPN.ANCHOR_STRIDE": (16,),
    "MODEL.RPN.ASPECT_RATIOS": (0.5, 1.0, 2.0),
    "MODEL.RPN.SCALES_PER_OCTAVE": 1,
    "MODEL.RPN.USE_FPN": False,
    "MODEL.ATSS.INFERENCE_TH": 0.05,
    "MODEL.ATSS.PRE_NMS_TOP_N": 1000,
    "MODEL.ATSS.NMS_TH": 0.6,
    "MODEL.ATSS.DETECTIONS_PER_IMG": 100,
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.MAX_SIZE_TEST": 1333,
    "INPUT.PIXEL_MEAN": (102.9801, 115.9465, 122.7717),
    "INPUT.PIXEL_STD": (1.0, 1.0, 1.0),
    "INPUT.TO_BGR255": True,
    "INPUT.FORMAT": "",
    "DATALOADER.SIZE_DIVISIBILITY": 0,
    "AUGMENT.MULT_MIN_SIZE_TRAIN": (),
    "INPUT.MAX_SIZE_TRAIN": 1333,
}

# Options that must have exactly this value: anything else is a model we do not implement.
_REQUIRED: dict[str, Any] = {
    "MODEL.META_ARCHITECTURE": "GeneralizedVLRCNN",
    "MODEL.RPN_ONLY": True,
    "MODEL.RPN_ARCHITECTURE": "VLDYHEAD",
    "MODEL.BACKBONE.CONV_BODY": "SWINT-FPN-RETINANET",
    "MODEL.SWINT.APE": False,
    "MODEL.SWINT.VERSION": "v1",
    "MODEL.SWINT.OUT_NORM": True,
    "MODEL.SWINT.LAYER_SCALE": 0,
    "MODEL.LANGUAGE_BACKBONE.MODEL_TYPE": "bert-base-uncased",
    "MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE": "bert-base-uncased",
    "MODEL.LANGUAGE_BACKBONE.N_LAYERS": 1,
    "MODEL.LANGUAGE_BACKBONE.MASK_SPECIAL": False,
    "MODEL.DYHEAD.SCORE_AGG": "MEAN",
    "MODEL.DYHEAD.CONV_FUNC": "",
    "MODEL.DYHEAD.GROUPS": 1,
    "MODEL.DYHEAD.COSINE_SCALE": -1.0,
    "MODEL.DYHEAD.FUSE_CONFIG.USE_DOT_PRODUCT_TOKEN_LOSS": True,
    "MODEL.DYHEAD.FUSE_CONFIG.USE_LAYER_SCALE": True,
    "MODEL.RPN.ASPECT_RATIOS": (1.0,),
    "MODEL.RPN.SCALES_PER_OCTAVE": 1,
    "MODEL.RPN.USE_FPN": True,
    "INPUT.FORMAT": "",
}

# Flags whose non-default value we refuse (default shown). Most are alternative losses / heads.
_MUST_BE_OFF: dict[str, Any] = {
    "MODEL.DYHEAD.FUSE_CONFIG.USE_CLASSIFICATION_LOSS": False,
    "MODEL.DYHEAD.FUSE_CONFIG.USE_TOKEN_LOSS": False,
    "MODEL.DYHEAD.FUSE_CONFIG.USE_CONTRASTIVE_ALIGN_LOSS": False,
    "MODEL.DYHEAD.FUSE_CONFIG.MLM_LOSS": False,
    "MODEL.DYHEAD.FUSE_CONFIG.USE_SHALLOW_CONTRASTIVE_LOSS": False,
    "MODEL.DYHEAD.FUSE_CONFIG.USE_BACKBONE_SHALLOW_CONTRASTIVE_LOSS": False,
    "MODEL.DYHEAD.FUSE_CONFIG.SEPARATE_BIDIRECTIONAL": False,
    "MODEL.DYHEAD.FUSE_CONFIG.STABLE_SOFTMAX_2D": False,
    "MODEL.LANGUAGE_BACKBONE.USE_CHECKPOINT": False,
    "MODEL.FPN.USE_DYHEAD": False,
    "MODEL.FPN.USE_GN": False,
    "MODEL.FPN.USE_RELU": False,
    "MODEL.SWINT.USE_CHECKPOINT": False,
    "MODEL.MASK_ON": False,
    "MODEL.KEYPOINT_ON": False,
    "TEST.USE_MULTISCALE": False,
}
_SUPPORTED_FUSION_TYPES = ("MHA-B",)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}." if prefix or key else ""))
        return flat
    return {prefix[:-1]: node}


def _norm(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("(") and value.endswith(")"):
        inner = value[1:-1].strip().rstrip(",")
        return tuple(_norm(v.strip()) for v in inner.split(",")) if inner else ()
    if isinstance(value, list | tuple):
        return tuple(_norm(v) for v in value)
    if isinstance(value, str):
        try:
            return json.loads(value.lower()) if value.lower() in ("true", "false") else float(value)
        except ValueError:
            return value
    return value


def _equal(a: Any, b: Any) -> bool:
    a, b = _norm(a), _norm(b)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(float(a) - float(b)) < 1e-9
    return a == b


def config_from_yaml(source: str | Path | dict[str, Any], bert: dict[str, Any] | None = None) -> GLIPConfig:
    """Read an official YAML (path or parsed dict). ``bert``: HF BertConfig kwargs (default bert-base-uncased).

    Raises :class:`UnsupportedConfigError` naming every option we do not implement.
    """
    if isinstance(source, dict):
        data, name = source, "custom"
    else:
        path = Path(source)
        data, name = yaml.safe_load(path.read_text()) or {}, path.stem
    flat = _flatten(data)

    def get(key: str) -> Any:
        return _norm(flat[key]) if key in flat else _norm(_DEFAULTS[key])

    problems = []
    for key, expected in _REQUIRED.items():
        if not _equal(get(key), expected):
            problems.append(f"{key}={flat.get(key)!r} (only {expected!r} is implemented)")
    for key, default in _MUST_BE_OFF.items():
        if key in flat and not _equal(flat[key], default):
            problems.append(f"{key}={flat[key]!r} (not implemented)")
    early_fuse = bool(get("MODEL.DYHEAD.FUSE_CONFIG.EARLY_FUSE_ON"))
    fuse_type = get("MODEL.DYHEAD.FUSE_CONFIG.TYPE")
    if early_fuse and fuse_type not in _SUPPORTED_FUSION_TYPES:
        problems.append(f"MODEL.DYHEAD.FUSE_CONFIG.TYPE={fuse_type!r} (only MHA-B is implemented)")
    if problems:
        raise UnsupportedConfigError("unsupported options in the GLIP config: " + "; ".join(problems))

    embed = int(get("MODEL.SWINT.EMBED_DIM"))
    depths = tuple(int(d) for d in get("MODEL.SWINT.DEPTHS"))
    text = TextConfig(
        bert=dict(bert or BERT_BASE_UNCASED),
        max_query_len=int(get("MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN")),
        freeze=bool(get("MODEL.LANGUAGE_BACKBONE.FREEZE")),
    )
    if "MODEL.LANGUAGE_BACKBONE.LANG_DIM" in flat and int(
        _norm(flat["MODEL.LANGUAGE_BACKBONE.LANG_DIM"])
    ) != int(text.bert["hidden_size"]):
        raise UnsupportedConfigError(
            f"MODEL.LANGUAGE_BACKBONE.LANG_DIM={flat['MODEL.LANGUAGE_BACKBONE.LANG_DIM']} does not match the "
            f"text encoder hidden size {text.bert['hidden_size']}: pass the matching bert= config"
        )
    num_blocks = int(get("MODEL.DYHEAD.NUM_CONVS"))
    return GLIPConfig(
        name=name,
        backbone=SwinConfig(
            embed_dim=embed,
            depths=depths,
            num_heads=tuple(int(h) for h in get("MODEL.SWINT.NUM_HEADS")),
            window_size=int(get("MODEL.SWINT.WINDOW_SIZE")),
            mlp_ratio=float(get("MODEL.SWINT.MLP_RATIO")),
            drop_path_rate=float(get("MODEL.SWINT.DROP_PATH_RATE")),
            frozen_stages=int(get("MODEL.BACKBONE.FREEZE_CONV_BODY_AT")),
        ),
        text=text,
        fpn_channels=int(get("MODEL.BACKBONE.OUT_CHANNELS")),
        fpn_drop_block=float(get("MODEL.FPN.DROP_PROB")) if bool(get("MODEL.FPN.DROP_BLOCK")) else 0.0,
        head=HeadConfig(
            channels=int(get("MODEL.DYHEAD.CHANNELS")),
            num_blocks=num_blocks,
            deep_fusion=early_fuse,
            fused_text_for_score=bool(get("MODEL.DYHEAD.FUSE_CONFIG.USE_FUSED_FEATURES_DOT_PRODUCT")),
            use_deform=bool(get("MODEL.DYHEAD.USE_DFCONV")),
            use_dyrelu=bool(get("MODEL.DYHEAD.USE_DYRELU")),
            use_dyfuse=bool(get("MODEL.DYHEAD.USE_DYFUSE")),
            use_gn=bool(get("MODEL.DYHEAD.USE_GN")),
            gn_groups=int(get("MODEL.GROUP_NORM.NUM_GROUPS")),
            num_classes=int(get("MODEL.DYHEAD.NUM_CLASSES")),
            prior_prob=float(get("MODEL.DYHEAD.PRIOR_PROB")),
            log_scale_init=float(get("MODEL.DYHEAD.LOG_SCALE")),
            prompt_tuning=bool(get("MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER")),
            use_checkpoint=bool(get("MODEL.DYHEAD.USE_CHECKPOINT")),
        ),
        anchors=AnchorConfig(
            sizes=tuple(int(s) for s in get("MODEL.RPN.ANCHOR_SIZES")),
            strides=tuple(int(s) for s in get("MODEL.RPN.ANCHOR_STRIDE")),
        ),
        input=InputConfig(
            min_size=int(_first(get("INPUT.MIN_SIZE_TEST"))),
            max_size=int(get("INPUT.MAX_SIZE_TEST")),
            pixel_mean=tuple(float(v) for v in get("INPUT.PIXEL_MEAN")),  # type: ignore[arg-type]
            pixel_std=tuple(float(v) for v in get("INPUT.PIXEL_STD")),  # type: ignore[arg-type]
            to_bgr255=bool(get("INPUT.TO_BGR255")),
            size_divisibility=int(get("DATALOADER.SIZE_DIVISIBILITY")),
            train_min_sizes=tuple(int(s) for s in get("AUGMENT.MULT_MIN_SIZE_TRAIN")) or (800,),
            train_max_size=int(get("INPUT.MAX_SIZE_TRAIN")),
        ),
        postprocess=PostprocessConfig(
            pre_nms_thresh=float(get("MODEL.ATSS.INFERENCE_TH")),
            pre_nms_top_n=int(get("MODEL.ATSS.PRE_NMS_TOP_N")),
            nms_thresh=float(get("MODEL.ATSS.NMS_TH")),
            detections_per_img=int(get("MODEL.ATSS.DETECTIONS_PER_IMG")),
        ),
    )


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, tuple) else value
