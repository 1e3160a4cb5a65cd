"""The teacher side of self-training: a caption's noun phrases -> confident boxes for each of them.

    teacher = Teacher(load_model("glip_t"), TeacherConfig(threshold=0.5, max_boxes_per_phrase=10))
    prompt = teacher.prompt("a woman riding a bicycle")      # GroundingPrompt or a PromptError
    [output] = teacher.label([image], [prompt])     # output.phrases: PhraseBoxes (original pixels)

GLIP's self-training (paper section 3.2, "grounding data at scale") parses noun phrases from each web caption,
grounds them with the teacher and keeps boxes above 0.5. Here: phrases come from the offline extractor
(:func:`glip.text.noun_phrases.find_noun_phrases`), a phrase's span is *every* whole-word occurrence of it in
the caption (the same tokens the predictor uses), and the teacher's detections get a second, per-phrase NMS and
a cap per phrase on top of the model's own post-processing (class-aware NMS 0.6, best 100).

Several image-caption pairs run as one batch (each image its own caption, text padded to the longest): images
are grouped by padded size first, as :class:`glip.predictor.GLIPPredictor` does, because the fusion attends to
image padding and would otherwise change an image's result (:mod:`glip.preprocess` does the preprocessing,
the grouping and the rescale back, for the predictor too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.ops import nms

from glip.models.glip import GLIP, GLIPOutput
from glip.preprocess import group_by_padded_size, pad_batch, preprocess_images, rescale_boxes
from glip.text.noun_phrases import find_noun_phrases, phrase_spans
from glip.text.prompts import label_token_dict_from_spans
from glip.text.tokenizer import MAX_QUERY_LEN, PromptError, get_tokenizer, tokenize_captions

__all__ = ["GroundingPrompt", "PhraseBoxes", "Teacher", "TeacherConfig", "TeacherOutput"]

Span = tuple[int, int]


@dataclass(frozen=True)
class TeacherConfig:
    """How teacher detections become pseudo-labels.

    threshold: keep boxes with score > threshold (the paper's 0.5).
    max_phrases: ground at most the first K noun phrases of a caption (None: all).
    max_boxes_per_phrase: keep at most this many boxes per phrase (best first).
    nms_iou: per-phrase NMS IoU (applied to all detections before the threshold, so raising the threshold
        never adds a box).
    """

    threshold: float = 0.5
    max_phrases: int | None = None
    max_boxes_per_phrase: int = 10
    nms_iou: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and 0.0 <= self.threshold < 1.0):
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")
        if self.max_phrases is not None and self.max_phrases < 1:
            raise ValueError(f"max_phrases must be >= 1 (or None for all), got {self.max_phrases}")
        if self.max_boxes_per_phrase < 1:
            raise ValueError(f"max_boxes_per_phrase must be >= 1, got {self.max_boxes_per_phrase}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {self.nms_iou}")


@dataclass(frozen=True)
class GroundingPrompt:
    """A caption and its phrases: ``phrases[j]`` is written in the caption at every span of ``spans[j]``
    (``caption[b:e].lower() == phrases[j].lower()``); ``label_to_tokens[j + 1]`` are its token positions."""

    caption: str
    phrases: tuple[str, ...]
    spans: tuple[tuple[Span, ...], ...]
    label_to_tokens: dict[int, list[int]]


@dataclass
class PhraseBoxes:
    """The boxes kept for one phrase of one image.

    phrase: the phrase as written at its first span; spans: its char spans in the caption;
    boxes: (N, 4) float32 xyxy in original-image pixels (legacy inclusive convention, as
    :class:`glip.predictor.Prediction`); scores: (N,) descending, all > the threshold.
    """

    phrase: str
    spans: tuple[Span, ...]
    boxes: torch.Tensor
    scores: torch.Tensor


@dataclass
class TeacherOutput:
    """One image's pseudo-labels: ``phrases`` (those with a kept box, in prompt order) and
    ``candidate_scores`` (M,): every detection's score after the per-phrase NMS, before the threshold and
    the cap (for the score histogram)."""

    phrases: list[PhraseBoxes]
    candidate_scores: torch.Tensor


class Teacher:
    """A GLIP model used as a pseudo-labeller (eval mode, fp32, no gradients)."""

    def __init__(self, model: GLIP, config: TeacherConfig | None = None, device: str | None = None) -> None:
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.config = config or TeacherConfig()
        self.max_query_len = min(model.config.text.max_query_len, MAX_QUERY_LEN)

    # ------------------------------------------------------------------ prompts
    def prompt(self, caption: str) -> GroundingPrompt:
        """The grounding prompt of a caption: its noun phrases (at most ``max_phrases``), each with all its
        whole-word occurrences. Raises :class:`PromptError` (caption too long / empty, no usable phrase)."""
        tokenize_captions([caption], max_length=self.max_query_len, pad_to_max=False)  # checks the length
        phrases: list[str] = []
        spans: list[tuple[Span, ...]] = []
        for phrase in find_noun_phrases(caption):
            try:
                found = phrase_spans(caption, [phrase])[0]
            except PromptError:  # the extractor's text is not a whole-word occurrence: skip the phrase
                continue
            start, end = found[0]
            phrases.append(caption[start:end])
            spans.append(tuple((int(b), int(e)) for b, e in found))
            if self.config.max_phrases is not None and len(phrases) == self.config.max_phrases:
                break
        if not phrases:
            raise PromptError(f"no noun phrase found in {caption!r}")
        encoding = get_tokenizer()(caption, truncation=False)
        labels = list(range(1, len(phrases) + 1))
        mapping = label_token_dict_from_spans(encoding, [list(s) for s in spans], labels, caption=caption)
        kept = [j for j in range(len(phrases)) if j + 1 in mapping]  # phrases that cover some token
        if not kept:
            raise PromptError(f"the noun phrases of {caption!r} cover no token")
        return GroundingPrompt(
            caption=caption,
            phrases=tuple(phrases[j] for j in kept),
            spans=tuple(spans[j] for j in kept),
            label_to_tokens={k + 1: mapping[j + 1] for k, j in enumerate(kept)},
        )

    # ------------------------------------------------------------------ labelling
    def label(
        self, images: Sequence[Image.Image], prompts: Sequence[GroundingPrompt], batch_size: int = 1
    ) -> list[TeacherOutput]:
        """Ground ``prompts[i]`` in ``images[i]`` (RGB PIL); per image, the phrases with at least one box
        above the threshold, in prompt order, and the candidate scores. ``batch_size`` pairs run per forward pass."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
        cfg = self.model.config.input
        tensors = preprocess_images(images, cfg)
        results: list[TeacherOutput | None] = [None] * len(images)
        for chunk in group_by_padded_size(tensors, cfg.size_divisibility, batch_size):
            raw = self._forward([tensors[i] for i in chunk], [prompts[i] for i in chunk])
            for i, (boxes, scores, labels) in zip(chunk, raw):
                size = (images[i].width, images[i].height)
                boxes = rescale_boxes(boxes, size, (int(tensors[i].shape[-2]), int(tensors[i].shape[-1])))
                results[i] = self._select(prompts[i], boxes, scores, labels)
        return [r for r in results if r is not None]

    @torch.inference_mode()
    def _forward(
        self, tensors: list[torch.Tensor], prompts: list[GroundingPrompt]
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One batch -> per image (boxes (N, 4) in the resized frame, scores (N,), labels (N,) 1-based)."""
        batch = pad_batch(tensors, self.model.config.input.size_divisibility).to(self.device)
        tokens = tokenize_captions(
            [p.caption for p in prompts], max_length=self.max_query_len, pad_to_max=False
        )
        text = self.model.encode_text(tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device))
        fpn = self.model.encode_images(batch.tensors)
        head = self.model.forward_head(fpn, text)
        output = GLIPOutput(
            head=head,
            anchors=self.model.anchor_generator(fpn),
            image_sizes=batch.image_sizes,
            text=text,
            fpn=fpn,
        )
        detections = self.model.postprocess(output, [p.label_to_tokens for p in prompts])
        return [(d.boxes.float().cpu(), d.scores.float().cpu(), d.labels.cpu()) for d in detections]

    def _select(
        self, prompt: GroundingPrompt, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor
    ) -> TeacherOutput:
        """Per phrase: NMS over all its detections, then score > threshold, then the best ``max`` boxes."""
        cfg = self.config
        kept, candidates = [], []
        for j, phrase in enumerate(prompt.phrases):
            mine = labels == j + 1
            if not bool(mine.any()):
                continue
            phrase_boxes, phrase_scores = boxes[mine], scores[mine]
            order = nms(phrase_boxes, phrase_scores, cfg.nms_iou)  # indices by decreasing score
            candidates.append(phrase_scores[order])
            order = order[phrase_scores[order] > cfg.threshold][: cfg.max_boxes_per_phrase]
            if len(order):
                kept.append(PhraseBoxes(phrase, prompt.spans[j], phrase_boxes[order], phrase_scores[order]))
        return TeacherOutput(kept, torch.cat(candidates) if candidates else torch.zeros(0))
