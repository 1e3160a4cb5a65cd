"""GLIPv2 on top of GLIP: extra pre-training losses, heads and tasks (see docs/glipv2.md).

Losses: :mod:`glip.v2.contrastive` (inter-image region-word contrastive L_inter, category propagation via
:mod:`glip.v2.phrases`), :mod:`glip.v2.mlm` (masked language modelling L_mlm); the heads a model owns:
:mod:`glip.v2.heads`. Segmentation (language-guided mask head, second stage): :mod:`glip.v2.segmentation`
(docs/segmentation.md). VL understanding (docs/vl-understanding.md): :mod:`glip.v2.vqa` (grounded VQA),
:mod:`glip.v2.captioning` (causal-mode grounded captioning), :mod:`glip.v2.vl_train` (joint training loop).
"""

from glip.v2.captioning import GLIPForCaptioning, caption_losses, caption_scores
from glip.v2.contrastive import InterContrastiveHead, contrastive_loss, inter_image_loss, inter_targets
from glip.v2.heads import build_v2_heads, ensure_v2_heads
from glip.v2.mlm import MLMHead, mask_tokens, mlm_loss
from glip.v2.phrases import normalize_phrase, phrase_id
from glip.v2.segmentation import (
    MaskHead,
    MaskHeadConfig,
    SegmentationTrainConfig,
    load_mask_head,
    save_mask_head,
    train_segmentation,
)
from glip.v2.vl_train import VLTrainConfig, train_vl
from glip.v2.vqa import GLIPForVQA, VQAHead, collate_vqa, vqa_losses

__all__ = [
    "GLIPForCaptioning",
    "GLIPForVQA",
    "VLTrainConfig",
    "VQAHead",
    "caption_losses",
    "caption_scores",
    "collate_vqa",
    "train_vl",
    "vqa_losses",
    "InterContrastiveHead",
    "MLMHead",
    "MaskHead",
    "MaskHeadConfig",
    "SegmentationTrainConfig",
    "build_v2_heads",
    "contrastive_loss",
    "ensure_v2_heads",
    "inter_image_loss",
    "inter_targets",
    "load_mask_head",
    "mask_tokens",
    "mlm_loss",
    "normalize_phrase",
    "phrase_id",
    "save_mask_head",
    "train_segmentation",
]
