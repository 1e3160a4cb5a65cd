"""GLIPv2 VQA: answer classification from the fused start-token state, grounded on the question's entities.

GLIPv2 (paper section 3.3, "One model architecture for all") adds, for VQA, a classification head on the
hidden representation of the start-of-sequence token of the *fused* text features P; grounded VQA trains the
same forward's grounding logits S_ground = O P^T to localise the entities the question mentions.

    question ids (B, T) --GLIP (bidirectional text, deep fusion)--> fused text (B, T, D), S_ground
    fused text[:, 0] ([CLS]) --VQAHead (Linear-GELU-LayerNorm-Linear)--> answer logits (B, K)
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

from glip.models.glip import GLIP, GLIPOutput
from glip.models.head_files import load_head_weights, read_head_meta, save_head_files
from glip.postprocess import Detections
from glip.preprocess import ImageBatch
from glip.text.prompts import label_token_dict_from_spans
from glip.text.tokenizer import tokenize_captions

__all__ = ["GLIPForVQA", "VQAHead", "VQAOutput", "VQAPrediction", "load_vqa_head", "save_vqa_head"]


class VQAHead(nn.Module):
    """Answer classifier on the start-token state: Linear(D, 2D) -> GELU -> LayerNorm -> Linear(2D, K)."""

    def __init__(self, hidden_dim: int, num_answers: int, dropout: float = 0.1) -> None:
        super().__init__()
        if num_answers < 2:
            raise ValueError(f"a VQA head needs at least 2 answers, got {num_answers}")
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, 2 * hidden_dim),
            nn.GELU(),
            nn.LayerNorm(2 * hidden_dim),
            nn.Dropout(dropout),
            nn.Linear(2 * hidden_dim, num_answers),
        )

    def forward(self, fused_text: torch.Tensor) -> torch.Tensor:
        """fused_text: (B, T, D) -> answer logits (B, K) from token 0 ([CLS])."""
        return self.mlp(fused_text[:, 0])


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
        self.head = VQAHead(glip.text_encoder.hidden_size, len(answers), dropout)

    def forward(
        self,
        images: ImageBatch,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        fpn: list[torch.Tensor] | None = None,
    ) -> VQAOutput:
        """images: (B, 3, H, W) padded; input_ids / attention_mask: (B, T) questions -> :class:`VQAOutput`."""
        output = self.glip(images, input_ids, attention_mask, fpn=fpn)
        return VQAOutput(self.head(output.head.fused_text), output)

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


def save_vqa_head(vqa: GLIPForVQA, directory: str | Path, half: bool = False) -> Path:
    """Write ``vqa_head.json`` (``{"answers": [...], "dropout": p}``) + ``vqa_head.safetensors`` into
    ``directory`` (beside a saved model), atomically; ``half``: fp16 weights (loaded back as fp32)."""
    dropout = next((m.p for m in vqa.head.modules() if isinstance(m, nn.Dropout)), 0.0)
    return save_head_files(
        vqa.head, directory, VQA_HEAD_FILES, {"answers": list(vqa.answers), "dropout": dropout}, half
    )


def load_vqa_head(directory: str | Path, glip: GLIP) -> GLIPForVQA | None:
    """The VQA wrapper around ``glip`` with the head saved in ``directory``; None when there is none."""
    meta = read_head_meta(directory, VQA_HEAD_FILES)
    if meta is None:
        return None
    vqa = GLIPForVQA(glip, meta["answers"], dropout=float(meta.get("dropout", 0.1)))
    load_head_weights(vqa.head, Path(directory) / VQA_HEAD_FILES[1])
    return vqa.eval()
