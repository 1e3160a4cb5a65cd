"""GLIPv2 VQA: answer classification from the fused question and the image where the question grounds.

GLIPv2 (paper section 3.3, "One model architecture for all") adds, for VQA, a classification head on the
*fused* text features P; grounded VQA trains the same forward's grounding logits S_ground = O P^T to localise
the entities the question mentions. Our head reads both sides of that forward: the fused question and the
image features where the question grounds (the fused text alone carries too little of the
image: the fusion's text-side layer scales stay ~0.01 after GLIP training, docs/vl-understanding.md).

    question ids (B, T) --GLIP (bidirectional text, deep fusion)--> fused text (B, T, D), S_ground (B, A, T),
                                      tower features (B, A, C), FPN features (B, A, F)  (glip.models.anchor_view)
    a = softmax_t(w . fused text)                 (B, T)  the question's tokens the answer is about (trained
                                                          towards the entity's tokens)
    q = a^T fused text                            (B, D)  the weighted question
    g = logit(sigmoid(S_ground) a)                (B, A)  the question's phrase score per anchor
    context = 4-head attention from q to the anchors (keys / values from [LN(tower), LN(FPN), centre]),
              g added to every head's logits      (B, 128) the image where the question grounds
    counts = log(1 + sum_A sigmoid(g) [* sigmoid(centerness)]) per level          (B, 2L)  how much grounds
    boxes = grounded_counts: the model's post-processed boxes of g above 0.2..0.7  (B, 6)   how many boxes
    [fused[:, 0], q, context, counts, boxes] --Linear-GELU-LayerNorm-Dropout-Linear--> answer logits (B, K)
    S_ground restricted to the entity's tokens --ATSS post-processing--> entity boxes

The wrapper :class:`GLIPForVQA` holds the GLIP model and the head side by side (``glip.*`` / ``head.*``
parameter names): the GLIP part loads and saves exactly like a plain GLIP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from glip.models.anchor_view import anchor_view, attend_to_anchors
from glip.models.glip import GLIP, GLIPOutput
from glip.models.head_files import load_head_weights, read_head_meta, save_head_files
from glip.postprocess import Detections, postprocess_image
from glip.preprocess import ImageBatch
from glip.text.prompts import label_token_dict_from_spans
from glip.text.tokenizer import tokenize_captions

__all__ = ["GLIPForVQA", "VQAHead", "VQAOutput", "VQAPrediction", "load_vqa_head", "save_vqa_head"]


class VQAHead(nn.Module):
    """Answer classifier on the fused question and the image where it grounds (module docstring).

    hidden_dim: D of the text; feature_dim: C of the head's tower; num_levels: L (5 for P3..P7).
    """

    def __init__(
        self,
        hidden_dim: int,
        num_answers: int,
        feature_dim: int,
        fpn_dim: int,
        num_levels: int = 5,
        dropout: float = 0.1,
        heads: int = 4,
        head_dim: int = 32,
    ) -> None:
        super().__init__()
        if num_answers < 2:
            raise ValueError(f"a VQA head needs at least 2 answers, got {num_answers}")
        self.num_levels, self.heads = num_levels, heads
        width = heads * head_dim
        self.token_score = nn.Linear(hidden_dim, 1)
        self.text_norm = nn.LayerNorm(hidden_dim)
        self.feature_norm = nn.LayerNorm(feature_dim)
        self.fpn_norm = nn.LayerNorm(fpn_dim)
        self.query = nn.Linear(hidden_dim, width)
        self.key = nn.Linear(feature_dim + fpn_dim + 2, width)
        self.value = nn.Linear(feature_dim + fpn_dim + 2, width)
        self.grounding_scale = nn.Parameter(torch.ones(heads))
        counts = 2 * num_levels + len(COUNT_THRESHOLDS)
        self.mlp = nn.Sequential(
            nn.Linear(2 * hidden_dim + width + counts, 2 * hidden_dim),
            nn.GELU(),
            nn.LayerNorm(2 * hidden_dim),
            nn.Dropout(dropout),
            nn.Linear(2 * hidden_dim, num_answers),
        )

    def token_weights(self, fused_text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Which question tokens the answer is about: fused_text (B, T, D), mask (B, >= T) -> (B, T), rows
        summing to 1 over the real tokens (trained towards the entity's tokens, ``glip.v2.vqa.vqa_losses``)."""
        mask = mask[:, : fused_text.shape[1]].bool()
        return self.token_score(fused_text).squeeze(-1).masked_fill(~mask, float("-inf")).softmax(dim=-1)

    def forward(self, output: GLIPOutput) -> torch.Tensor:
        """The GLIP forward of the questions -> answer logits (B, K)."""
        fused = output.head.fused_text  # (B, T, D)
        view = anchor_view(output)
        if len(view.level_sizes) != self.num_levels:
            raise ValueError(
                f"the head was built for {self.num_levels} levels, the model has {len(view.level_sizes)}"
            )
        weights = self.token_weights(fused, output.text.mask)
        question = torch.einsum("bt,btd->bd", weights, fused)  # (B, D)
        token_probs = view.token_logits[..., : fused.shape[1]].sigmoid()
        probs = torch.einsum("bat,bt->ba", token_probs, weights)  # (B, A) mean token probability, weighted
        grounding = torch.logit(probs, eps=1e-6)
        image = torch.cat(
            [self.feature_norm(view.features), self.fpn_norm(view.fpn), view.centres], dim=-1
        )  # (B, A, C + F + 2)
        bias = self.grounding_scale[:, None, None] * grounding[:, None, None, :]  # (B, H, 1, A)
        query = self.query(self.text_norm(question))[:, None]  # (B, 1, H * d)
        context = attend_to_anchors(query, self.key(image), self.value(image), self.heads, bias)[:, 0]
        both = probs * view.centerness.sigmoid()
        counts = [
            torch.log1p(part.sum(dim=1))
            for level_probs, level_both in zip(
                probs.split(view.level_sizes, dim=1), both.split(view.level_sizes, dim=1)
            )
            for part in (level_probs, level_both)
        ]
        boxes = grounded_counts(output, grounding.detach(), view.level_sizes)
        inputs = torch.cat([fused[:, 0], question, context, torch.stack(counts, dim=1), boxes], dim=1)
        return self.mlp(inputs)


#: Score thresholds at which :func:`grounded_counts` counts the boxes of the question's grounding.
COUNT_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


@torch.no_grad()
def grounded_counts(output: GLIPOutput, grounding: torch.Tensor, level_sizes: Sequence[int]) -> torch.Tensor:
    """How many boxes the question grounds to: the model's own post-processing (box decoding, centerness,
    NMS) of ``grounding`` (B, A) logits as one phrase, counted above each of :data:`COUNT_THRESHOLDS`
    -> (B, len(COUNT_THRESHOLDS)) float."""
    thresholds = torch.tensor(COUNT_THRESHOLDS, device=grounding.device)
    rows = []
    for index, size in enumerate(output.image_sizes):
        detections = postprocess_image(
            [level[:, None] for level in grounding[index].split(list(level_sizes))],
            [r[index] for r in output.head.box_regression],
            [c[index] for c in output.head.centerness],
            output.anchors,
            size,
            {1: [0]},
        )
        rows.append((detections.scores[:, None] > thresholds).sum(dim=0))
    return torch.stack(rows).to(grounding.dtype)


@dataclass
class VQAOutput:
    """answer_logits: (B, K); glip: the GLIP outputs of the same forward (S_ground, boxes)."""

    answer_logits: torch.Tensor
    glip: GLIPOutput


@dataclass
class VQAPrediction:
    """The answer to one question, with the boxes of its entity (best first, in the input image frame)."""

    answer: str
    answer_score: float
    entity_boxes: Detections | None


class GLIPForVQA(nn.Module):
    """GLIP + :class:`VQAHead` over ``answers`` (the answer vocabulary; class id = position)."""

    def __init__(self, glip: GLIP, answers: Sequence[str], dropout: float = 0.1) -> None:
        super().__init__()
        if len(set(answers)) != len(answers):
            raise ValueError("the answer vocabulary has duplicates")
        self.glip = glip
        self.answers = tuple(answers)
        self.head = VQAHead(
            glip.text_encoder.hidden_size,
            len(answers),
            glip.config.head.channels,
            glip.config.fpn_channels,
            len(glip.anchor_generator.strides),
            dropout,
        )

    def forward(
        self,
        images: ImageBatch,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        fpn: list[torch.Tensor] | None = None,
    ) -> VQAOutput:
        """images: (B, 3, H, W) padded; input_ids / attention_mask: (B, T) questions -> :class:`VQAOutput`."""
        output = self.glip(images, input_ids, attention_mask, fpn=fpn)
        return VQAOutput(self.head(output), output)

    @torch.no_grad()
    def answer(
        self, images: ImageBatch, questions: Sequence[str], entity_spans: Sequence[tuple[int, int] | None]
    ) -> list[VQAPrediction]:
        """Answer ``questions`` (one per image) and box each one's entity phrase (char span, or None).

        Boxes are in each image's network-input frame (``images.image_sizes``), best first.
        """
        if len(questions) != len(images.image_sizes) or len(entity_spans) != len(questions):
            raise ValueError(
                f"{len(images.image_sizes)} images, {len(questions)} questions, {len(entity_spans)} spans"
            )
        tokens = tokenize_captions(list(questions), pad_to_max=False)
        device = images.tensors.device
        output = self(images, tokens.input_ids.to(device), tokens.attention_mask.to(device))
        probs = output.answer_logits.softmax(dim=-1)
        scores, ids = probs.max(dim=-1)
        maps = [
            label_token_dict_from_spans(encoding, [[span]], [1], caption=question) if span is not None else {}
            for question, span, encoding in zip(questions, entity_spans, tokens.encodings)
        ]
        detections = self.glip.postprocess(output.glip, maps)
        return [
            VQAPrediction(self.answers[int(i)], float(s), d if span is not None else None)
            for i, s, d, span in zip(ids, scores, detections, entity_spans)
        ]


# ----------------------------------------------------------------------------------------------- saving

VQA_HEAD_FILES = ("vqa_head.json", "vqa_head.safetensors")
#: 2: the grounded head of this module (1, unmarked: the earlier classifier on [CLS] alone).
HEAD_FORMAT = 2


def save_vqa_head(vqa: GLIPForVQA, directory: str | Path, half: bool = False) -> Path:
    """Write ``vqa_head.json`` (``{"answers": [...], "dropout": p}``) + ``vqa_head.safetensors`` into
    ``directory`` (beside a saved model), atomically; ``half``: fp16 weights (loaded back as fp32)."""
    dropout = next((m.p for m in vqa.head.modules() if isinstance(m, nn.Dropout)), 0.0)
    meta = {
        "answers": list(vqa.answers),
        "dropout": dropout,
        "format": HEAD_FORMAT,
        "feature_dim": vqa.head.feature_norm.normalized_shape[0],
        "fpn_dim": vqa.head.fpn_norm.normalized_shape[0],
        "num_levels": vqa.head.num_levels,
    }
    return save_head_files(vqa.head, directory, VQA_HEAD_FILES, meta, half)


def load_vqa_head(directory: str | Path, glip: GLIP) -> GLIPForVQA | None:
    """The VQA wrapper around ``glip`` with the head saved in ``directory``; None when there is none."""
    meta = read_head_meta(directory, VQA_HEAD_FILES)
    if meta is None:
        return None
    if meta.get("format") != HEAD_FORMAT:
        raise ValueError(
            f"the VQA head in {directory} is of an older format (a classifier on [CLS] alone); this version "
            "reads the image where the question grounds: retrain it (glip.v2.vl_train.train_vl)"
        )
    vqa = GLIPForVQA(glip, meta["answers"], dropout=float(meta.get("dropout", 0.1)))
    wanted = (meta["feature_dim"], meta["fpn_dim"], meta["num_levels"])
    built = (glip.config.head.channels, glip.config.fpn_channels, vqa.head.num_levels)
    if wanted != built:
        raise ValueError(
            f"the VQA head in {directory} was trained for (head, FPN channels, levels) {wanted}, the model has {built}"
        )
    load_head_weights(vqa.head, Path(directory) / VQA_HEAD_FILES[1])
    return vqa.eval()
