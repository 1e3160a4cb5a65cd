"""GLIPv2's tasks on top of GLIP (see docs/glipv2.md).

VL understanding (docs/vl-understanding.md): :mod:`glip.v2.vqa` (grounded VQA), :mod:`glip.v2.captioning`
(causal-mode grounded captioning), :mod:`glip.v2.vl_train` (joint training loop). Segmentation
(docs/segmentation.md): :mod:`glip.v2.segmentation` (second-stage training of the mask head).

GLIPv2's model parts and losses live in the core packages: the pre-training heads in
:mod:`glip.models.pretrain_heads`, the mask head in :mod:`glip.models.mask_head`, L_inter in
:mod:`glip.losses.contrastive`, L_mlm in :mod:`glip.losses.mlm`, the training criterion that combines them in
:mod:`glip.losses.criterion`, phrase identities in :mod:`glip.text.phrases`.
"""

from glip.models.captioning import GLIPForCaptioning
from glip.v2.captioning import caption_losses, caption_scores
from glip.v2.segmentation import SegmentationTrainConfig, mask_loss, mask_targets, train_segmentation
from glip.v2.vl_train import VLTrainConfig, train_vl
from glip.v2.vqa import GLIPForVQA, VQAHead, collate_vqa, vqa_losses

__all__ = [
    "GLIPForCaptioning",
    "GLIPForVQA",
    "SegmentationTrainConfig",
    "VLTrainConfig",
    "VQAHead",
    "caption_losses",
    "caption_scores",
    "collate_vqa",
    "mask_loss",
    "mask_targets",
    "train_segmentation",
    "train_vl",
    "vqa_losses",
]
