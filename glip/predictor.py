"""GLIPPredictor: load once, then give it images and words and get boxes.

    predictor = GLIPPredictor.from_pretrained("glip_t")
    result = predictor.predict("street.jpg", classes=["person", "bicycle", "traffic light"])
    result.boxes, result.scores, result.phrases

* ``classes=[...]``: a detection prompt ("person. bicycle. traffic light"), split into several prompts
  when it does not fit 256 tokens (LVIS-size vocabularies); the image backbone runs once per image and
  only text encoding + fusion + head run per prompt; text encodings are cached.
* ``caption="..."`` (+ ``phrases=[...]`` or ``spans=[...]``): phrase grounding; without phrases the noun
  phrases are extracted offline with spaCy.
* Images of a batch are grouped by padded size, so every image gets exactly the result it gets alone
  (the official fusion attends to the zero padding of a batch).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from glip.images import ImageError, ImageInput, load_image
from glip.models.glip import GLIP, GLIPOutput
from glip.models.language import TextFeatures
from glip.postprocess import Detections
from glip.preprocess import ImageBatch, normalize, pad_batch, resize_image, resized_hw
from glip.runtime import autocast, check_precision, resolve_device
from glip.text.prompts import (
    DetectionPrompt,
    build_detection_prompt,
    clean_name,
    label_token_dict_from_spans,
)
from glip.text.tokenizer import MAX_QUERY_LEN, PromptError, get_tokenizer, tokenize_captions

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    """Detections of one image, in original-image pixels.

    boxes: (N, 4) float xyxy; scores: (N,); labels: (N,) int64 index into ``names`` (the classes or phrases
    asked for); phrases: N strings; image_size: (width, height) of the original image; masks: (N, H, W) bool
    instance masks in original-image pixels when asked for (``predict(..., masks=True)``), else None.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    phrases: list[str]
    names: list[str]
    image_size: tuple[int, int]
    source: str | None = None
    caption: str | None = None
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to_dict(self) -> dict[str, Any]:
        width, height = self.image_size
        result = {
            "file": self.source,
            "width": width,
            "height": height,
            "caption": self.caption,
            "detections": [
                {
                    "box_xyxy": [round(float(v), 2) for v in box],
                    "score": round(float(score), 5),
                    "label": int(label),
                    "phrase": phrase,
                }
                for box, score, label, phrase in zip(
                    self.boxes.tolist(), self.scores.tolist(), self.labels.tolist(), self.phrases
                )
            ],
        }
        if self.masks is not None:  # COCO compressed RLE per detection
            from glip.data.masks import encode_rle

            for entry, mask in zip(result["detections"], self.masks):
                entry["segmentation"] = encode_rle(mask)
        return result

    def to_coco_results(self, image_id: int, category_ids: Sequence[int]) -> list[dict[str, Any]]:
        """COCO results entries. ``category_ids[label]`` is the category of each label index.

        Boxes are converted to xywh with the official legacy convention (``w = x2 - x1 + 1``), as the
        official COCO evaluation does (BoxList.convert("xywh")).
        """
        results = []
        for box, score, label in zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist()):
            x1, y1, x2, y2 = box
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[label]),
                    "bbox": [x1, y1, x2 - x1 + 1, y2 - y1 + 1],
                    "score": float(score),
                }
            )
        return results

    def to_supervision(self) -> Any:
        """``supervision.Detections`` (needs ``pip install supervision``)."""
        try:
            import supervision as sv
        except ImportError:
            raise ImportError(
                "to_supervision() needs the supervision package: pip install supervision"
            ) from None
        return sv.Detections(
            xyxy=self.boxes.numpy(),
            confidence=self.scores.numpy(),
            class_id=self.labels.numpy(),
            data={"class_name": list(self.phrases)},
        )


@dataclass
class _Prompt:
    """One model call's text: caption + label -> token positions (labels are 1-based indices into names)."""

    caption: str
    label_to_tokens: dict[int, list[int]]
    labels: list[int] = field(default_factory=list)


class GLIPPredictor:
    """Inference wrapper. ``chunk_size``: classes per prompt (default: as many as fit 256 tokens)."""

    def __init__(
        self,
        model: GLIP,
        device: str | torch.device | None = None,
        chunk_size: int | None = None,
        text_cache_size: int = 64,
        precision: str = "fp32",
        mask_head: torch.nn.Module | None = None,
    ) -> None:
        self.device = resolve_device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        # GLIPv2 mask head (glip.models.mask_head.MaskHead) for predict(..., masks=True); None: boxes only
        self.mask_head = mask_head.to(self.device).eval() if mask_head is not None else None
        self.chunk_size = chunk_size
        self._text_cache: OrderedDict[str, TextFeatures] = OrderedDict()
        self._text_cache_size = text_cache_size
        self.max_query_len = min(model.config.text.max_query_len, MAX_QUERY_LEN)
        check_precision(precision, self.device)
        self.precision = precision

    def _autocast(self) -> Any:
        """fp16 / bf16 autocast on GPU (post-processing always in fp32); nothing for fp32."""
        return autocast(self.device, self.precision)

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str | None = None, **kwargs: Any) -> GLIPPredictor:
        from glip.weights.loading import load_model

        if "mask_head" not in kwargs:  # a mask head saved beside the model (glip.models.mask_head)
            from glip.models.mask_head import MASK_HEAD_WEIGHTS_FILE, load_mask_head

            if (Path(name_or_path) / MASK_HEAD_WEIGHTS_FILE).is_file():
                kwargs["mask_head"] = load_mask_head(name_or_path)
        resolved = resolve_device(device)
        return cls(load_model(name_or_path, device=str(resolved)), device=resolved, **kwargs)

    # ------------------------------------------------------------------ prompts
    def class_prompts(self, classes: Sequence[str], chunk_size: int | None = None) -> list[_Prompt]:
        """Split ``classes`` into prompts that fit the text length; labels are 1-based class indices."""
        names = [str(c) for c in classes]
        if not names:
            raise PromptError("no class names given")
        for index, name in enumerate(names):
            if not any(ch.isalnum() for ch in clean_name(name)):  # "", "...", "(empty)", "(x)_."
                raise PromptError(f"class {index} {name!r} is empty after cleaning")
        chunk_size = chunk_size if chunk_size is not None else self.chunk_size
        if chunk_size is not None and chunk_size < 1:
            raise PromptError(
                f"chunk_size must be a positive number of classes per prompt, got {chunk_size} "
                "(None: as many as fit the text length)"
            )
        if chunk_size:
            groups = [
                list(range(i, min(i + chunk_size, len(names)))) for i in range(0, len(names), chunk_size)
            ]
        else:
            groups = self._pack(names)
        prompts = []
        for group in groups:
            prompt: DetectionPrompt = build_detection_prompt(
                [names[i] for i in group], [i + 1 for i in group], max_len=self.max_query_len
            )
            if prompt.exceeds_max_len:
                raise PromptError(
                    f"classes {group[0]}..{group[-1]} need {prompt.num_tokens} tokens > {self.max_query_len}: "
                    "use a smaller chunk size"
                )
            prompts.append(_Prompt(prompt.caption, dict(prompt.label_to_token), [i + 1 for i in group]))
        return prompts

    def _pack(self, names: list[str]) -> list[list[int]]:
        """Greedy packing by token count: "a. b" tokenizes to tokens(a) + ['.'] + tokens(b)."""
        tokenizer = get_tokenizer()
        costs = [len(tokenizer(clean_name(n), add_special_tokens=False)["input_ids"]) for n in names]
        groups: list[list[int]] = [[]]
        used = 2  # [CLS], [SEP]
        for index, cost in enumerate(costs):
            extra = cost + (1 if groups[-1] else 0)
            if groups[-1] and used + extra > self.max_query_len:
                groups.append([])
                used, extra = 2, cost
            if used + extra > self.max_query_len:
                raise PromptError(f"class {index} {names[index]!r} alone needs {cost} tokens")
            groups[-1].append(index)
            used += extra
        return groups

    def caption_prompt(
        self,
        caption: str,
        phrases: Sequence[str] | None = None,
        spans: Sequence[Sequence[tuple[int, int]]] | None = None,
    ) -> tuple[_Prompt, list[str]]:
        """A grounding prompt: phrases (all their occurrences), explicit spans, or extracted noun phrases."""
        from glip.text.noun_phrases import find_noun_phrases, phrase_spans

        tokenize_captions([caption], max_length=self.max_query_len, pad_to_max=False)  # checks & length
        if spans is not None:
            entity_spans = [[(int(s), int(e)) for s, e in entity] for entity in spans]
            for entity in entity_spans:
                for start, end in entity:
                    if not 0 <= start < end <= len(caption):
                        raise PromptError(
                            f"span ({start}, {end}) does not fit the caption of {len(caption)} chars"
                        )
            names = (
                list(phrases)
                if phrases
                else [" / ".join(caption[s:e] for s, e in ent) for ent in entity_spans]
            )
        else:
            names = list(phrases) if phrases else find_noun_phrases(caption)
            if not names:
                raise PromptError(f"no noun phrase found in {caption!r}: pass phrases=[...]")
            entity_spans = phrase_spans(caption, names)
        if len(names) != len(entity_spans):
            raise PromptError(f"{len(names)} phrase names for {len(entity_spans)} span groups")
        encoding = get_tokenizer()(caption, truncation=False)
        labels = list(range(1, len(names) + 1))
        label_to_tokens = label_token_dict_from_spans(encoding, entity_spans, labels, caption=caption)
        lost = [names[lab - 1] for lab in labels if lab not in label_to_tokens]
        if lost:
            raise PromptError(f"phrases {lost} cover no token of the caption")
        return _Prompt(caption, label_to_tokens, labels), names

    # ------------------------------------------------------------------ text
    def _text(self, caption: str) -> TextFeatures:
        cached = self._text_cache.get(caption)
        if cached is not None:
            self._text_cache.move_to_end(caption)
            return cached
        tokens = tokenize_captions([caption], max_length=self.max_query_len, pad_to_max=False)
        with torch.inference_mode(), self._autocast():
            features = self.model.encode_text(
                tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
            )
        self._text_cache[caption] = features
        if len(self._text_cache) > self._text_cache_size:
            self._text_cache.popitem(last=False)
        return features

    # ------------------------------------------------------------------ predict
    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        classes: Sequence[str] | None = None,
        caption: str | None = None,
        phrases: Sequence[str] | None = None,
        spans: Sequence[Sequence[tuple[int, int]]] | None = None,
        threshold: float = 0.5,
        chunk_size: int | None = None,
        batch_size: int = 1,
        masks: bool = False,
    ) -> Prediction | list[Prediction]:
        """Detect ``classes`` or ground ``caption`` in one image (returns a Prediction) or a list (a list).

        ``masks=True``: also an instance mask per detection (``Prediction.masks``), from the mask head given
        to the predictor (GLIPv2 segmentation, :mod:`glip.models.mask_head`).
        """
        if masks and self.mask_head is None:
            raise ValueError(
                "masks=True needs a mask head: GLIPPredictor(model, mask_head=load_mask_head(DIR)) or a model "
                "directory holding mask_head.safetensors (written by the second-stage training, docs/segmentation.md)"
            )
        single = not isinstance(images, list | tuple)
        image_list = [images] if single else list(images)
        if (classes is None) == (caption is None):
            raise PromptError("give exactly one of classes=[...] or caption='...'")
        if classes is not None:
            if isinstance(classes, str):
                classes = [c.strip() for c in classes.split(",") if c.strip()] or [classes]
            prompts = self.class_prompts(classes, chunk_size)
            names = [str(c) for c in classes]
            caption_text = None
        else:
            assert caption is not None
            prompt, names = self.caption_prompt(caption, phrases, spans)
            prompts = [prompt]
            caption_text = caption
        results = self._predict_loaded(
            [(load_image(img), str(img) if isinstance(img, str | Path) else None) for img in image_list],
            prompts,
            names,
            threshold,
            batch_size,
            caption_text,
            masks=masks,
        )
        return results[0] if single else results

    def _predict_loaded(
        self,
        images: list[tuple[Any, str | None]],
        prompts: list[_Prompt],
        names: list[str],
        threshold: float,
        batch_size: int,
        caption: str | None,
        masks: bool = False,
    ) -> list[Prediction]:
        cfg = self.model.config.input
        if masks and self.mask_head is None:
            raise ValueError("masks=True needs a mask head (GLIPPredictor(..., mask_head=...))")
        for image, source in images:
            if min(resized_hw(image.width, image.height, cfg.min_size, cfg.max_size)) < 1:
                raise ImageError(
                    f"{source or 'the image'} ({image.width}x{image.height} pixels) is too elongated: "
                    f"resizing it to at most {cfg.max_size} pixels long leaves no row or column"
                )
        tensors = [
            normalize(
                resize_image(image, cfg.min_size, cfg.max_size), cfg.pixel_mean, cfg.pixel_std, cfg.to_bgr255
            )
            for image, _ in images
        ]
        # group by padded size so that batching never changes an image's result
        divisor = max(cfg.size_divisibility, 1)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, tensor in enumerate(tensors):
            key = (-(-tensor.shape[-2] // divisor), -(-tensor.shape[-1] // divisor))
            groups.setdefault(key, []).append(index)
        detections: list[Detections | None] = [None] * len(images)
        mask_probs: list[torch.Tensor | None] = [None] * len(images)
        for indices in groups.values():
            for start in range(0, len(indices), max(batch_size, 1)):
                chunk = indices[start : start + max(batch_size, 1)]
                batch = pad_batch([tensors[i] for i in chunk], cfg.size_divisibility).to(self.device)
                probs: list[torch.Tensor] | None = [] if masks else None
                for index, dets in zip(chunk, self._detect_batch(batch, prompts, mask_probs=probs)):
                    detections[index] = dets
                for index, prob in zip(chunk, probs or []):
                    mask_probs[index] = prob
        results = []
        for (image, source), tensor, dets, prob in zip(images, tensors, detections, mask_probs):
            assert dets is not None
            keep = torch.nonzero(dets.scores >= threshold).reshape(-1)
            dets = dets.select(keep)
            order = dets.scores.argsort(descending=True)
            dets = dets.select(order)
            scale = torch.tensor(
                [image.width / tensor.shape[-1], image.height / tensor.shape[-2]] * 2, dtype=torch.float32
            )
            instance_masks = None
            if prob is not None and self.mask_head is not None:
                from glip.models.mask_head import continuous_boxes, paste_masks

                instance_masks = paste_masks(
                    prob.cpu()[keep.cpu()][order.cpu()],
                    continuous_boxes(dets.boxes.detach().cpu().float()) * scale,
                    (image.height, image.width),
                    threshold=self.mask_head.config.mask_threshold,
                )
            labels = dets.labels.cpu() - 1
            results.append(
                Prediction(
                    boxes=dets.boxes.detach().cpu().float() * scale,
                    scores=dets.scores.detach().cpu().float(),
                    labels=labels,
                    phrases=[names[i] for i in labels.tolist()],
                    names=list(names),
                    image_size=(image.width, image.height),
                    source=source,
                    caption=caption,
                    masks=instance_masks,
                )
            )
        return results

    @torch.inference_mode()
    def _detect_batch(
        self, batch: ImageBatch, prompts: list[_Prompt], mask_probs: list[torch.Tensor] | None = None
    ) -> list[Detections]:
        """The backbone + FPN once, then text / fusion / head / post-processing per prompt; chunks are
        concatenated as the official chunked evaluation does (each chunk NMS'd and capped on its own).

        ``mask_probs``: a list that receives, per image, the mask head's (N, M, M) probabilities of its
        detections (same order), from the tower features and fused text of each detection's prompt."""
        with self._autocast():
            fpn = self.model.encode_images(batch.tensors)
        anchors = self.model.anchor_generator(fpn)
        per_image: list[list[Detections]] = [[] for _ in batch.image_sizes]
        per_image_masks: list[list[torch.Tensor]] = [[] for _ in batch.image_sizes]
        for prompt in prompts:
            text = self._text(prompt.caption)
            size = len(batch.image_sizes)
            expanded = TextFeatures(
                hidden=text.hidden.expand(size, -1, -1),
                embedded=text.embedded.expand(size, -1, -1),
                mask=text.mask.expand(size, -1),
            )
            with self._autocast():
                head = self.model.forward_head(fpn, expanded)
            if self.precision != "fp32":
                head = dataclasses.replace(
                    head,
                    token_logits=[t.float() for t in head.token_logits],
                    box_regression=[r.float() for r in head.box_regression],
                    centerness=[c.float() for c in head.centerness],
                )
            output = GLIPOutput(
                head=head, anchors=anchors, image_sizes=batch.image_sizes, text=expanded, fpn=fpn
            )
            found = self.model.postprocess(output, prompt.label_to_tokens)
            for index, dets in enumerate(found):
                per_image[index].append(dets)
            if mask_probs is not None and self.mask_head is not None:
                from glip.models.mask_head import detection_masks

                with self._autocast():
                    probs = detection_masks(
                        self.mask_head,
                        head.features,
                        head.fused_text,
                        [d.boxes for d in found],
                        [d.labels for d in found],
                        prompt.label_to_tokens,
                    )
                for index, prob in enumerate(probs):
                    per_image_masks[index].append(prob.float())
        if mask_probs is not None:
            mask_probs.extend(torch.cat(parts) for parts in per_image_masks)
        return [Detections.cat(parts) for parts in per_image]

    # ------------------------------------------------------------------ HF pipeline convention
    def __call__(
        self,
        image: ImageInput,
        candidate_labels: Sequence[str] | str,
        threshold: float = 0.1,
        top_k: int | None = None,
    ) -> list[dict[str, Any]]:
        """Hugging Face zero-shot-object-detection calling convention.

        Returns ``[{"score", "label", "box": {"xmin", "ymin", "xmax", "ymax"}}]`` sorted by score.
        """
        if isinstance(candidate_labels, str):
            candidate_labels = [c.strip() for c in candidate_labels.split(",") if c.strip()]
        result = self.predict(image, classes=list(candidate_labels), threshold=threshold)
        assert isinstance(result, Prediction)
        out = [
            {
                "score": float(score),
                "label": phrase,
                "box": {
                    "xmin": int(round(box[0])),
                    "ymin": int(round(box[1])),
                    "xmax": int(round(box[2])),
                    "ymax": int(round(box[3])),
                },
            }
            for box, score, phrase in zip(result.boxes.tolist(), result.scores.tolist(), result.phrases)
        ]
        return out[:top_k] if top_k else out
