"""The GLIP detector: image backbone + FPN, BERT, the VL-DyHead, anchors and post-processing.

Data flow (shapes for one batch; T = text tokens kept, D = text width, C = head channels):

    images (B, 3, H, W) --backbone--> C3..C5 --FPN--> P3..P7 (B, C, H_l, W_l)
    input_ids (B, T)    --BERT------> hidden (B, T, D)
    (P3..P7, hidden) --VL-DyHead tower (fusion -> BERT layer -> DyConv) x N--> fused maps, fused text
    fused maps x fused text --> token logits (B, H_l*W_l, T); box deltas (B, 4, H_l, W_l); centerness
    --post-processing (phrase = mean of its tokens)--> boxes, scores, labels per image
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from glip.config import EfficientNetConfig, GLIPConfig, SwinConfig
from glip.memory import large_forward, stage_end
from glip.models.anchors import AnchorGenerator
from glip.models.fpn import FPN
from glip.models.head import HeadOutput, VLDyHead
from glip.models.language import TextEncoder, TextFeatures
from glip.models.pretrain_heads import build_v2_heads, forward_v2_heads
from glip.postprocess import Detections, LabelToTokens, postprocess_image
from glip.preprocess import ImageBatch


@dataclass
class GLIPOutput:
    """Raw outputs of :meth:`GLIP.forward`.

    head: per-level token logits / box deltas / centerness (see :class:`glip.models.head.HeadOutput`).
    anchors: L tensors (H_l*W_l, 4) xyxy, shared by the batch.
    image_sizes: unpadded (H, W) per image.
    text: the text encoder's output (hidden, embedded, mask), possibly trimmed to the longest prompt.
    fpn: P3..P7 before fusion, each (B, C, H_l, W_l).
    v2: outputs of the GLIPv2 heads asked for with ``forward(..., v2=...)`` (see
        :func:`glip.models.pretrain_heads.forward_v2_heads`), else None.
    """

    head: HeadOutput
    anchors: list[torch.Tensor]
    image_sizes: list[tuple[int, int]]
    text: TextFeatures
    fpn: list[torch.Tensor]
    v2: dict[str, torch.Tensor] | None = None


class GLIP(nn.Module):
    """GLIP. Build with :func:`build_model`; official checkpoints load through :func:`glip.load_model`."""

    def __init__(
        self,
        backbone: nn.Module,
        fpn: FPN,
        text_encoder: TextEncoder,
        head: VLDyHead,
        anchor_generator: AnchorGenerator,
        config: GLIPConfig,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.text_encoder = text_encoder
        self.head = head
        self.anchor_generator = anchor_generator
        self.config = config
        # Drop text padding beyond the longest real prompt of the batch. Exact: padded tokens are masked
        # everywhere they could reach real tokens or image features (see docs/architecture.md).
        self.trim_text_padding = True
        # GLIPv2 pre-training heads (glip/models/pretrain_heads.py); None for plain GLIP, so official checkpoints load strictly
        self.v2_heads: nn.ModuleDict | None = None

    # ------------------------------------------------------------------ pieces
    def encode_images(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images: (B, 3, H, W) normalised -> P3..P7, each (B, C, H_l, W_l)."""
        with large_forward(images):  # no-grad CPU forwards of large images: glip/memory.py
            body = self.backbone(images)[-3:]
            stage_end()
            return self.fpn(body)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, causal: bool = False
    ) -> TextFeatures:
        """input_ids, attention_mask: (B, T) -> text features (trimmed to the longest prompt if enabled).

        ``causal=True``: unidirectional text attention (see :meth:`forward`).
        """
        if self.trim_text_padding:
            length = max(int(attention_mask.sum(dim=1).max()), 1)
            input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        if causal:
            return self.text_encoder(input_ids, attention_mask, causal=True)
        return self.text_encoder(input_ids, attention_mask)

    def forward_head(self, fpn: list[torch.Tensor], text: TextFeatures, causal: bool = False) -> HeadOutput:
        """The VL-DyHead on precomputed image and text features."""
        with large_forward(fpn[0], stride=8):  # P3: the same image-size rule as the image encoder
            if causal:
                return self.head(fpn, text.hidden, text.embedded, text.mask, causal=True)
            return self.head(fpn, text.hidden, text.embedded, text.mask)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        images: ImageBatch,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        fpn: list[torch.Tensor] | None = None,
        causal: bool = False,
        v2: Sequence[str] = (),
        text: TextFeatures | None = None,
    ) -> GLIPOutput:
        """images: padded batch (B, 3, H, W); input_ids/attention_mask: (B, T). ``fpn`` skips the backbone,
        ``text`` (from :meth:`encode_text` of these ids) the text encoder.

        ``causal=True`` (GLIPv2 captioning mode): text token t attends only to tokens <= t in the text
        encoder and the in-head BERT layers, and the fusion blocks do not update the image features (text
        still attends to the image): image features and box outputs do not depend on the text, and the
        logits of token t do not depend on later tokens.

        ``v2``: names of GLIPv2 heads to run (``"inter"``, ``"mlm"``); their outputs go to ``GLIPOutput.v2``.
        """
        with large_forward(images.tensors):  # no-grad CPU forwards of large images: glip/memory.py
            if fpn is None:
                fpn = self.encode_images(images.tensors)
            if text is None:
                text = self.encode_text(input_ids, attention_mask, causal=causal)
            head = self.forward_head(fpn, text, causal=causal)
            anchors = self.anchor_generator(fpn)
            v2_out = None
            if v2:
                v2_out = forward_v2_heads(self, fpn, text, head, v2)
        return GLIPOutput(
            head=head, anchors=anchors, image_sizes=list(images.image_sizes), text=text, fpn=fpn, v2=v2_out
        )

    def postprocess(
        self,
        output: GLIPOutput,
        label_to_tokens: LabelToTokens | Sequence[LabelToTokens],
        detections_per_img: int | None = None,
    ) -> list[Detections]:
        """Boxes in each image's resized (unpadded) frame; one label->tokens map for all images or one each.

        ``detections_per_img``: the cap per image (None: ``config.postprocess.detections_per_img``)."""
        maps = (
            [label_to_tokens] * len(output.image_sizes)
            if isinstance(label_to_tokens, dict)
            else list(label_to_tokens)  # type: ignore[arg-type]
        )
        post = self.config.postprocess
        results = []
        for index, size in enumerate(output.image_sizes):
            results.append(
                postprocess_image(
                    [t[index] for t in output.head.token_logits],
                    [r[index] for r in output.head.box_regression],
                    [c[index] for c in output.head.centerness],
                    output.anchors,
                    size,
                    maps[index],
                    pre_nms_thresh=post.pre_nms_thresh,
                    pre_nms_top_n=post.pre_nms_top_n,
                    nms_thresh=post.nms_thresh,
                    detections_per_img=(
                        post.detections_per_img if detections_per_img is None else int(detections_per_img)
                    ),
                    min_size=post.min_size,
                )
            )
        return results


def _build_backbone(config: GLIPConfig) -> nn.Module:
    backbone = config.backbone
    if isinstance(backbone, SwinConfig):
        from glip.models.swin import SwinTransformer

        return SwinTransformer(
            embed_dim=backbone.embed_dim,
            depths=backbone.depths,
            num_heads=backbone.num_heads,
            window_size=backbone.window_size,
            mlp_ratio=backbone.mlp_ratio,
            drop_path_rate=backbone.drop_path_rate,
            frozen_stages=backbone.frozen_stages,
        )
    if isinstance(backbone, EfficientNetConfig):
        from glip.models.efficientnet import EfficientNetBackbone

        return EfficientNetBackbone(
            backbone.name, backbone.pretrained, backbone.out_indices, backbone.frozen_stages
        )
    raise TypeError(f"unsupported backbone config {type(backbone).__name__}")


def build_model(config: GLIPConfig) -> GLIP:
    """Build a randomly initialised GLIP (pretrained parts load where the config says so)."""
    bert = config.text.bert
    text_dim = int(bert["hidden_size"])
    head_cfg = config.head
    backbone = _build_backbone(config)
    fpn = FPN(tuple(config.backbone.out_channels[-3:]), config.fpn_channels, config.fpn_drop_block)
    text_encoder = TextEncoder(dict(bert), config.text.pretrained, config.text.freeze)
    head = VLDyHead(
        in_channels=config.fpn_channels,
        channels=head_cfg.channels,
        num_blocks=head_cfg.num_blocks,
        text_dim=text_dim,
        text_heads=int(bert["num_attention_heads"]),
        text_intermediate=int(bert["intermediate_size"]),
        text_eps=float(bert.get("layer_norm_eps", 1e-12)),
        text_dropout=float(bert.get("hidden_dropout_prob", 0.1)),
        deep_fusion=head_cfg.deep_fusion,
        fused_text_for_score=head_cfg.fused_text_for_score,
        fusion_embed_dim=head_cfg.fusion_embed_dim,
        fusion_heads=head_cfg.fusion_heads,
        fusion_dropout=head_cfg.fusion_dropout,
        layer_scale=head_cfg.layer_scale,
        use_deform=head_cfg.use_deform,
        use_dyfuse=head_cfg.use_dyfuse,
        use_dyrelu=head_cfg.use_dyrelu,
        gn_groups=head_cfg.gn_groups if head_cfg.use_gn else None,
        num_classes=head_cfg.num_classes,
        prior_prob=head_cfg.prior_prob,
        log_scale_init=head_cfg.log_scale_init,
        num_levels=len(config.anchors.strides),
        prompt_tuning=head_cfg.prompt_tuning,
        use_checkpoint=head_cfg.use_checkpoint,
    )
    anchors = AnchorGenerator(config.anchors.sizes, config.anchors.strides)
    model = GLIP(backbone, fpn, text_encoder, head, anchors, config)
    if config.v2.inter_dim > 0 or config.v2.mlm_head:
        model.v2_heads = build_v2_heads(config)
    return model
