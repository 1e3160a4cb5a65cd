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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from glip.images import MAX_PIXELS, ImageInput, load_image
from glip.memory import large_forward
from glip.models.captioning import GLIPForCaptioning
from glip.models.glip import GLIP, GLIPOutput
from glip.models.language import TextFeatures
from glip.models.vqa import GLIPForVQA
from glip.postprocess import Detections
from glip.preprocess import ImageBatch, group_by_padded_size, pad_batch, preprocess_images, rescale_boxes
from glip.runtime import autocast, check_precision, resolve_device
from glip.text import prompts as text_prompts
from glip.text.prompts import Prompt
from glip.text.tokenizer import MAX_QUERY_LEN, PromptError, tokenize_captions

__all__ = ["Answer", "Caption", "CaptionWord", "GLIPPredictor", "Prediction", "Prompt"]

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

    def to_json(self, path: str | Path | None = None, indent: int | None = 1) -> str:
        """:meth:`to_dict` as JSON text; written (atomically) to ``path`` too when given."""
        import json

        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            from glip.fileio import atomic_write_text

            atomic_write_text(Path(path), text)
        return text

    def plot(self, image: ImageInput | None = None, max_boxes: int = 100, mask_alpha: float = 0.5) -> Any:
        """The image with the detections drawn (boxes, masks, "phrase score" labels that never cover one
        another: :func:`glip.visualize.draw_prediction`), as a new RGB PIL image.

        ``image``: the image predicted on (a path, URL, PIL image, array or tensor); default: ``source``,
        the path or URL it was read from (predictions of arrays / PIL images need ``image``).
        """
        from glip.visualize import draw_prediction

        if image is None:
            if self.source is None:
                raise ValueError(
                    "this prediction was made on an in-memory image: pass it, prediction.plot(image)"
                )
            from glip.remote import load_source

            picture = load_source(self.source, max_pixels=None)
        else:
            picture = load_image(image, max_pixels=None)
        if picture.size != tuple(self.image_size):
            raise ValueError(
                f"the image is {picture.size[0]}x{picture.size[1]} but the prediction was made on a "
                f"{self.image_size[0]}x{self.image_size[1]} image"
            )
        return draw_prediction(picture, self, max_boxes=max_boxes, mask_alpha=mask_alpha)

    def save(self, path: str | Path, image: ImageInput | None = None, **plot_kwargs: Any) -> Path:
        """Write :meth:`plot` to ``path`` (the format from its suffix: .png, .jpg, .webp ...), atomically;
        returns the path."""
        from PIL import Image

        from glip.fileio import atomic_save

        path = Path(path)
        extension = path.suffix.lower()
        pil_format = Image.registered_extensions().get(extension)
        if pil_format is None:
            raise ValueError(f"cannot tell an image format from {path.name!r}: use .png, .jpg, .webp ...")
        drawn = self.plot(image, **plot_kwargs)
        atomic_save(path, lambda handle: drawn.save(handle, format=pil_format))
        return path

    def to_coco_results(
        self, image_id: int, category_ids: Sequence[int], legacy_plus_one: bool = True
    ) -> list[dict[str, Any]]:
        """COCO results entries ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``;
        ``category_ids[label]`` is the category of each label index.

        ``legacy_plus_one=True`` (default) converts xyxy to xywh as the official GLIP code exports for COCO
        (maskrcnn-benchmark's ``BoxList.convert("xywh")``: ``w = x2 - x1 + 1``, ``h = y2 - y1 + 1``), so AP
        numbers match the official evaluation; ``False`` gives the plain ``w = x2 - x1`` that pycocotools,
        LVIS and most other tools assume. The two differ by one pixel per box, which moves AP (e.g. 0.594 ->
        0.581 on a synthetic test set): compare numbers only under one convention (docs/evaluation.md).
        """
        extra = 1.0 if legacy_plus_one else 0.0
        results = []
        for box, score, label in zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist()):
            x1, y1, x2, y2 = box
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[label]),
                    "bbox": [x1, y1, x2 - x1 + extra, y2 - y1 + extra],
                    "score": float(score),
                }
            )
        return results

    def to_supervision(self) -> Any:
        """``supervision.Detections`` (needs ``pip install supervision``), with the instance masks when asked
        for (``predict(..., masks=True)``) as its ``mask`` (N, H, W) bool."""
        try:
            import supervision as sv
        except ImportError:
            raise ImportError(
                "to_supervision() needs the supervision package: pip install supervision"
            ) from None
        return sv.Detections(
            xyxy=self.boxes.numpy(),
            mask=None if self.masks is None else self.masks.cpu().numpy().astype(bool),
            confidence=self.scores.numpy(),
            class_id=self.labels.numpy(),
            data={"class_name": list(self.phrases)},
        )


#: Single words that a question asks about rather than point at ("what colour is ..."): not grounded.
QUESTION_WORDS = frozenset({"colour", "color", "shape", "kind", "type", "number", "size", "many", "much"})


@dataclass
class Answer:
    """GLIPv2 grounded VQA: the answer to a question about one image, and where its entities are.

    answer / score: the best answer of the VQA head and its probability; entities: a :class:`Prediction`
    holding the boxes (original-image pixels) of the question's entity phrases (``entities.phrases``),
    best first, above the threshold.
    """

    question: str
    answer: str
    score: float
    entities: Prediction

    def to_dict(self) -> dict[str, Any]:
        record = self.entities.to_dict()
        record.pop("caption", None)
        return {"question": self.question, "answer": self.answer, "score": round(self.score, 5), **record}


@dataclass
class CaptionWord:
    """A word of a generated caption, its best box (xyxy, original-image pixels) and score (None: no box)."""

    word: str
    box: list[float] | None
    score: float


@dataclass
class Caption:
    """GLIPv2 grounded captioning: a caption of one image and each of its words with its box."""

    text: str
    words: list[CaptionWord]
    image_size: tuple[int, int]
    source: str | None = None

    def grounded(self, min_score: float = 0.0) -> list[CaptionWord]:
        """The words that have a box scoring at least ``min_score``."""
        return [w for w in self.words if w.box is not None and w.score >= min_score]

    def to_dict(self) -> dict[str, Any]:
        width, height = self.image_size
        return {
            "file": self.source,
            "width": width,
            "height": height,
            "caption": self.text,
            "words": [
                {
                    "word": w.word,
                    "box_xyxy": None if w.box is None else [round(float(v), 2) for v in w.box],
                    "score": round(float(w.score), 5),
                }
                for w in self.words
            ],
        }


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
        vqa: GLIPForVQA | None = None,
        captioner: GLIPForCaptioning | None = None,
    ) -> None:
        self.device = resolve_device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        # GLIPv2 mask head (glip.models.mask_head.MaskHead) for predict(..., masks=True); None: boxes only
        self.mask_head = mask_head.to(self.device).eval() if mask_head is not None else None
        # GLIPv2 VL heads around this same model (all weights shared): ask() / caption(); None: not available
        for name, wrapper in (("vqa", vqa), ("captioner", captioner)):
            if wrapper is not None and wrapper.glip is not model:
                raise ValueError(f"{name} must wrap the predictor's own model (GLIPv2 shares every weight)")
        self.vqa = vqa.to(self.device).eval() if vqa is not None else None
        self.captioner = captioner.to(self.device).eval() if captioner is not None else None
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
        """A predictor for a released name, ``"demo"`` / ``"demo_v2"`` (bundled), a saved directory, an
        official ``.pth`` or a Hub repository ``"user/repo"`` (its snapshot is downloaded first). GLIPv2 heads
        saved beside the model (mask head, VQA and captioning heads) are loaded too, around the same model."""
        from glip.models.captioning import load_caption_head
        from glip.models.mask_head import MASK_HEAD_WEIGHTS_FILE, load_mask_head
        from glip.models.vqa import load_vqa_head
        from glip.weights.demo import bundled_model_dir
        from glip.weights.hub import local_model_path
        from glip.weights.loading import load_model

        name_or_path = local_model_path(name_or_path)  # "user/repo" -> its downloaded Hub snapshot folder
        resolved = resolve_device(device)
        directory = bundled_model_dir(str(name_or_path)) or Path(name_or_path)
        model = load_model(directory if directory.is_dir() else name_or_path, device=str(resolved))
        if directory.is_dir():
            if "mask_head" not in kwargs and (directory / MASK_HEAD_WEIGHTS_FILE).is_file():
                kwargs["mask_head"] = load_mask_head(directory)
            if "vqa" not in kwargs:
                kwargs["vqa"] = load_vqa_head(directory, model)
            if "captioner" not in kwargs:
                kwargs["captioner"] = load_caption_head(directory, model)
        return cls(model, device=resolved, **kwargs)

    @classmethod
    def from_onnx(cls, directory: str | Path, **kwargs: Any) -> GLIPPredictor:
        """A predictor whose forward runs in onnxruntime on CPU (a folder written by ``glip export`` /
        :func:`glip.export.onnx.to_onnx`); prompts, pre- and post-processing are this class's own code."""
        from glip.export.onnx import ExportError, OnnxModel

        if kwargs.get("mask_head") is not None or kwargs.get("precision", "fp32") != "fp32":
            raise ExportError("an ONNX model predicts boxes in fp32 only (no mask head, no precision)")
        return cls(OnnxModel(directory), device="cpu", **kwargs)

    # ------------------------------------------------------------------ prompts
    def class_prompts(self, classes: Sequence[str], chunk_size: int | None = None) -> list[Prompt]:
        """Detection prompts of ``classes`` (labels: 1-based class indices), see
        :func:`glip.text.prompts.class_prompts`: ``chunk_size`` None (default: the predictor's) packs as many
        classes as fit the text length, ``k`` puts ``k`` per prompt, -1 all in one."""
        chunk_size = chunk_size if chunk_size is not None else self.chunk_size
        return text_prompts.class_prompts(classes, chunk_size, max_len=self.max_query_len)

    def caption_prompt(
        self,
        caption: str,
        phrases: Sequence[str] | None = None,
        spans: Sequence[Sequence[tuple[int, int]]] | None = None,
    ) -> tuple[Prompt, list[str]]:
        """A grounding prompt (:func:`glip.text.prompts.caption_prompt`) and its phrase names."""
        prompt = text_prompts.caption_prompt(caption, phrases, spans, max_len=self.max_query_len)
        return prompt, list(prompt.names)

    # ------------------------------------------------------------------ text
    def encode_prompt_text(self, caption: str) -> TextFeatures:
        """Text features of a caption, (1, L, D): cached (at most ``text_cache_size`` captions)."""
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
        *,
        bgr: bool = False,
        max_pixels: int | None = MAX_PIXELS,
    ) -> Prediction | list[Prediction]:
        """Detect ``classes`` or ground ``caption`` in one image (returns a Prediction) or a list (a list).

        ``masks=True``: also an instance mask per detection (``Prediction.masks``), from the mask head given
        to the predictor (GLIPv2 segmentation, :mod:`glip.models.mask_head`). ``bgr``, ``max_pixels``: see
        :func:`glip.images.load_image`. Builds the prompts and calls :meth:`predict_prompts`.
        """
        self._check_masks(masks)
        single = not isinstance(images, list | tuple)
        image_list = [images] if single else list(images)
        if (classes is None) == (caption is None):
            raise PromptError("give exactly one of classes=[...] or caption='...'")
        if classes is not None:
            if isinstance(classes, str):
                classes = [c.strip() for c in classes.split(",") if c.strip()] or [classes]
            prompts = self.class_prompts(classes, chunk_size)
        else:
            assert caption is not None
            prompts = [self.caption_prompt(caption, phrases, spans)[0]]
        results = self.predict_prompts(
            image_list,
            prompts,
            threshold=threshold,
            batch_size=batch_size,
            masks=masks,
            caption=caption,
            bgr=bgr,
            max_pixels=max_pixels,
        )
        return results[0] if single else results

    def predict_prompts(
        self,
        images: Sequence[ImageInput],
        prompts: Sequence[Prompt],
        threshold: float = 0.5,
        batch_size: int = 1,
        masks: bool = False,
        detections_per_img: int | None = None,
        caption: str | None = None,
        *,
        bgr: bool = False,
        max_pixels: int | None = MAX_PIXELS,
        sources: Sequence[str | None] | None = None,
    ) -> list[Prediction]:
        """Run ready-made prompts (:func:`glip.text.prompts.class_prompts` / ``caption_prompt``) on images.

        The backbone runs once per image; text, fusion, head and post-processing once per prompt, and the
        prompts' detections are concatenated (each prompt NMS'd and capped on its own, as the official chunked
        evaluation). Images are batched by padded size (:func:`glip.preprocess.group_by_padded_size`), so
        ``batch_size`` never changes a result.

        Args:
            images: I images (paths, PIL images, arrays, tensors: :func:`glip.images.load_image`).
            prompts: the prompts; their labels are 1-based indices into the request's names, which are taken
                from the prompts (``Prediction.names[label - 1]``).
            threshold: keep detections with score >= threshold (0: everything post-processing keeps).
            batch_size: images per forward pass.
            masks: also instance masks (needs a mask head).
            detections_per_img: the cap per image and prompt of the post-processing (None: the model's
                ``config.postprocess.detections_per_img``).
            caption: stored in ``Prediction.caption``.
            bgr, max_pixels: see :func:`glip.images.load_image`.
            sources: I names for messages and ``Prediction.source`` (default: the paths given, else None).

        Returns:
            I :class:`Prediction`, boxes in original-image pixels, sorted by score.
        """
        if not (isinstance(threshold, int | float) and 0.0 <= threshold <= 1.0):  # NaN fails this too
            raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
        self._check_masks(masks)
        if isinstance(images, str | Path) or not isinstance(images, Sequence):
            images = [images]  # type: ignore[list-item]
        if sources is not None and len(sources) != len(images):
            raise ValueError(f"{len(sources)} sources for {len(images)} images")
        loaded = [
            (
                load_image(img, bgr=bgr, max_pixels=max_pixels),
                sources[i] if sources is not None else str(img) if isinstance(img, str | Path) else None,
            )
            for i, img in enumerate(images)
        ]
        return self._predict_loaded(
            loaded,
            list(prompts),
            prompt_names(prompts),
            threshold,
            batch_size,
            caption,
            masks=masks,
            detections_per_img=detections_per_img,
        )

    def _check_masks(self, masks: bool) -> None:
        if masks and self.mask_head is None:
            raise ValueError(
                "masks=True needs a mask head: GLIPPredictor(model, mask_head=load_mask_head(DIR)) or a model "
                "directory holding mask_head.safetensors (written by the second-stage training, docs/segmentation.md)"
            )

    def _predict_loaded(
        self,
        images: list[tuple[Any, str | None]],
        prompts: list[Prompt],
        names: list[str],
        threshold: float,
        batch_size: int,
        caption: str | None,
        masks: bool = False,
        detections_per_img: int | None = None,
    ) -> list[Prediction]:
        """(RGB PIL image, source) pairs -> Predictions (the implementation of :meth:`predict_prompts`)."""
        cfg = self.model.config.input
        self._check_masks(masks)
        tensors = preprocess_images([image for image, _ in images], cfg, [source for _, source in images])
        detections: list[Detections | None] = [None] * len(images)
        mask_probs: list[torch.Tensor | None] = [None] * len(images)
        for chunk in group_by_padded_size(tensors, cfg.size_divisibility, batch_size):
            batch = pad_batch([tensors[i] for i in chunk], cfg.size_divisibility).to(self.device)
            probs: list[torch.Tensor] | None = [] if masks else None
            found = self._detect_batch(
                batch,
                prompts,
                mask_probs=probs,
                detections_per_img=detections_per_img,
                mask_min_score=threshold,
            )
            for index, dets in zip(chunk, found):
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
            image_size = (image.width, image.height)
            tensor_size = (int(tensor.shape[-2]), int(tensor.shape[-1]))
            instance_masks = None
            if prob is not None and self.mask_head is not None:
                from glip.models.mask_head import continuous_boxes, paste_masks

                instance_masks = paste_masks(
                    prob.cpu()[keep.cpu()][order.cpu()],
                    rescale_boxes(
                        continuous_boxes(dets.boxes.detach().cpu().float()), image_size, tensor_size
                    ),
                    (image.height, image.width),
                    threshold=self.mask_head.config.mask_threshold,
                )
            labels = dets.labels.cpu() - 1
            results.append(
                Prediction(
                    boxes=rescale_boxes(dets.boxes.detach().cpu().float(), image_size, tensor_size),
                    scores=dets.scores.detach().cpu().float(),
                    labels=labels,
                    phrases=[names[i] for i in labels.tolist()],
                    names=list(names),
                    image_size=image_size,
                    source=source,
                    caption=caption,
                    masks=instance_masks,
                )
            )
        return results

    @torch.inference_mode()
    def _detect_batch(
        self,
        batch: ImageBatch,
        prompts: list[Prompt],
        mask_probs: list[torch.Tensor] | None = None,
        detections_per_img: int | None = None,
        mask_min_score: float = 0.0,
    ) -> list[Detections]:
        """The backbone + FPN once, then text / fusion / head / post-processing per prompt; chunks are
        concatenated as the official chunked evaluation does (each chunk NMS'd and capped on its own).

        ``mask_probs``: a list that receives, per image, the mask head's (N, M, M) probabilities of its
        detections (same order), from the tower features and fused text of each detection's prompt; only
        detections scoring ``mask_min_score`` or more (the caller's threshold) get one, the others zeros (the
        head's cost grows with the boxes: ~100 per image before the threshold, ~10 after it).

        One allocator setting (:func:`glip.memory.large_forward`) spans the backbone and every prompt's head,
        as one ``GLIP.forward`` does: the heap's pages stay mapped from one prompt to the next instead of
        being returned and faulted in again for each prompt (long vocabularies: docs/benchmarks.md)."""
        with large_forward(batch.tensors):
            return self._detect_prompts(batch, prompts, mask_probs, detections_per_img, mask_min_score)

    def _detect_prompts(
        self,
        batch: ImageBatch,
        prompts: list[Prompt],
        mask_probs: list[torch.Tensor] | None,
        detections_per_img: int | None,
        mask_min_score: float,
    ) -> list[Detections]:
        with self._autocast():
            fpn = self.model.encode_images(batch.tensors)
        anchors = self.model.anchor_generator(fpn)
        per_image: list[list[Detections]] = [[] for _ in batch.image_sizes]
        per_image_masks: list[list[torch.Tensor]] = [[] for _ in batch.image_sizes]
        for prompt in prompts:
            text = self.encode_prompt_text(prompt.caption)
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
            found = self.model.postprocess(
                output, prompt.label_to_tokens, detections_per_img=detections_per_img
            )
            for index, dets in enumerate(found):
                per_image[index].append(dets)
            if mask_probs is not None and self.mask_head is not None:
                from glip.models.mask_head import detection_masks

                wanted = [torch.nonzero(d.scores >= mask_min_score).reshape(-1) for d in found]
                with self._autocast():
                    probs = detection_masks(
                        self.mask_head,
                        head.features,
                        head.fused_text,
                        [d.boxes[w] for d, w in zip(found, wanted)],
                        [d.labels[w] for d, w in zip(found, wanted)],
                        prompt.label_to_tokens,
                        images=batch.tensors,
                    )
                for index, (prob, dets, w) in enumerate(zip(probs, found, wanted)):
                    every = prob.new_zeros((len(dets.scores), *prob.shape[1:]), dtype=torch.float32)
                    every[w] = prob.float()
                    per_image_masks[index].append(every)
        if mask_probs is not None:
            mask_probs.extend(torch.cat(parts) for parts in per_image_masks)
        return [Detections.cat(parts) for parts in per_image]

    # ------------------------------------------------------------------ GLIPv2: VQA and captioning
    def require(self, head: str) -> None:
        """Raise a clear ValueError when the model lacks ``head`` (``"vqa"`` or ``"captioner"``)."""
        if getattr(self, head) is None:
            what = {
                "vqa": "VQA head (vqa_head.safetensors)",
                "captioner": "captioning head (caption_head.safetensors)",
            }
            raise ValueError(
                f"this model has no {what[head]}: GLIPv2 VQA and captioning need a model trained with them, e.g. the "
                "bundled GLIPv2 demo model (--model demo_v2, GLIPPredictor.from_pretrained('demo_v2'))"
            )

    def _one_image_batch(self, image: Any) -> tuple[ImageBatch, tuple[int, int], tuple[int, int]]:
        """A loaded RGB image -> (a padded batch of one on the device, (width, height), tensor (H, W))."""
        cfg = self.model.config.input
        [tensor] = preprocess_images([image], cfg)
        batch = pad_batch([tensor], cfg.size_divisibility).to(self.device)
        return batch, (image.width, image.height), (int(tensor.shape[-2]), int(tensor.shape[-1]))

    def question_entities(self, question: str) -> list[str]:
        """The phrases of ``question`` that name things in the image (noun phrases, without the words a
        question asks about: "what colour is the circle?" -> ["the circle"], "how many red stars ..." ->
        ["red stars"])."""
        from glip.text.noun_phrases import find_noun_phrases

        entities = []
        for phrase in find_noun_phrases(question):
            words = phrase.split()
            while words and words[0].lower() in QUESTION_WORDS:
                words = words[1:]
            if words and not (len(words) == 1 and words[0].lower() in QUESTION_WORDS):
                entities.append(" ".join(words))
        return entities

    @torch.inference_mode()
    def ask(
        self,
        images: ImageInput | Sequence[ImageInput],
        question: str,
        threshold: float = 0.3,
        entities: Sequence[str] | None = None,
        *,
        bgr: bool = False,
        max_pixels: int | None = MAX_PIXELS,
    ) -> Answer | list[Answer]:
        """GLIPv2 grounded VQA: answer ``question`` about one image (an :class:`Answer`) or each of a list.

        The answer comes from the VQA head (the fused question and the image where it grounds); the same
        forward grounds the question's entity phrases (``entities``, default :meth:`question_entities`), whose
        boxes scoring at least ``threshold`` are returned. Raises ``ValueError`` for a model without a VQA head and
        :class:`~glip.text.tokenizer.PromptError` for an empty or too long question.
        """
        self.require("vqa")
        assert self.vqa is not None
        if not (isinstance(threshold, int | float) and 0.0 <= threshold <= 1.0):
            raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
        if not isinstance(question, str) or not question.strip():
            raise PromptError("the question is empty")
        tokens = tokenize_captions([question], max_length=self.max_query_len, pad_to_max=False)
        names = list(entities) if entities is not None else self.question_entities(question)
        prompt = self.caption_prompt(question, names)[0] if names else None
        single = not isinstance(images, list | tuple)
        answers = []
        for item in [images] if single else list(images):
            image = load_image(item, bgr=bgr, max_pixels=max_pixels)
            source = str(item) if isinstance(item, str | Path) else None
            batch, image_size, tensor_size = self._one_image_batch(image)
            with self._autocast():
                output = self.vqa(
                    batch, tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
                )
            probs = output.answer_logits.float().softmax(dim=-1)[0]
            score, index = probs.max(dim=0)
            found = Prediction(
                boxes=torch.zeros(0, 4),
                scores=torch.zeros(0),
                labels=torch.zeros(0, dtype=torch.long),
                phrases=[],
                names=list(prompt.names) if prompt else [],
                image_size=image_size,
                source=source,
            )
            if prompt is not None:
                dets = self.model.postprocess(output.glip, prompt.label_to_tokens)[0]
                keep = torch.nonzero(dets.scores >= threshold).reshape(-1)
                dets = dets.select(keep)
                dets = dets.select(dets.scores.argsort(descending=True))
                labels = dets.labels.cpu() - 1
                found = dataclasses.replace(
                    found,
                    boxes=rescale_boxes(dets.boxes.detach().cpu().float(), image_size, tensor_size),
                    scores=dets.scores.detach().cpu().float(),
                    labels=labels,
                    phrases=[prompt.names[i] for i in labels.tolist()],
                )
            answers.append(Answer(question, self.vqa.answers[int(index)], float(score), found))
        return answers[0] if single else answers

    @torch.inference_mode()
    def caption(
        self,
        images: ImageInput | Sequence[ImageInput],
        beams: int = 1,
        max_length: int = 32,
        *,
        bgr: bool = False,
        max_pixels: int | None = MAX_PIXELS,
    ) -> Caption | list[Caption]:
        """GLIPv2 grounded captioning: a caption of one image (a :class:`Caption`) or each of a list, greedy
        (``beams=1``) or by beam search, each word with its best box (S_ground of the word in the causal
        forward). Raises ``ValueError`` for a model without a captioning head or a bad ``beams``."""
        self.require("captioner")
        assert self.captioner is not None
        if not isinstance(beams, int) or beams < 1:
            raise ValueError(f"beams must be an integer >= 1, got {beams!r}")
        if not isinstance(max_length, int) or not 1 <= max_length <= self.max_query_len - 2:
            raise ValueError(
                f"max_length must be an integer in [1, {self.max_query_len - 2}], got {max_length!r}"
            )
        single = not isinstance(images, list | tuple)
        captions = []
        for item in [images] if single else list(images):
            image = load_image(item, bgr=bgr, max_pixels=max_pixels)
            batch, image_size, tensor_size = self._one_image_batch(image)
            [generated] = self.captioner.generate(batch, beam_size=beams, max_length=max_length, ground=True)
            scale = rescale_boxes(torch.ones(1, 4), image_size, tensor_size)[0].tolist()
            words = [
                CaptionWord(
                    w.word,
                    None if w.box is None else [v * f for v, f in zip(w.box, scale)],
                    float(w.score),
                )
                for w in generated.words or []
            ]
            source = str(item) if isinstance(item, str | Path) else None
            captions.append(Caption(generated.text, words, image_size, source))
        return captions[0] if single else captions

    # ------------------------------------------------------------------ HF pipeline convention
    def __call__(
        self,
        image: Any,
        candidate_labels: Sequence[str] | Sequence[Sequence[str]] | str | None = None,
        threshold: float = 0.1,
        top_k: int | None = None,
        timeout: float | None = None,
        batch_size: int = 1,
        **kwargs: Any,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """The calling convention of Hugging Face transformers' ``zero-shot-object-detection`` pipeline.

        Accepted as the pipeline accepts them:

        * ``predictor(image, candidate_labels=["cat", "dog"])`` (or ``"cat,dog"``, split on "," as the
          pipeline does, without stripping) -> ``[{"score", "label", "box": {"xmin", "ymin", "xmax",
          "ymax"}}]`` sorted by score;
        * ``predictor({"image": ..., "candidate_labels": ...})``: the same list;
        * ``predictor([img1, img2], candidate_labels=...)`` (the same labels for all, or one list per image)
          and ``predictor([{"image", "candidate_labels"}, ...])`` (a list or a generator): one list per image.

        Images are paths, ``http(s)://`` URLs (fetched with ``timeout``), PIL images, arrays or tensors.
        ``label`` is the candidate label string as given; box values are the pipeline's: pixel coordinates
        truncated to int (``box.int()``, not rounded). ``text_queries=`` is accepted for ``candidate_labels``
        as by the pipeline. ``threshold`` keeps scores >= it; ``top_k`` caps each image's list;
        ``batch_size`` images with the same labels go through the model together.
        """
        if "text_queries" in kwargs:
            candidate_labels = kwargs.pop("text_queries")
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        if isinstance(image, dict):
            ((source, labels),) = self._hf_requests([image], None)
            return self._hf_detect([source], [labels], threshold, top_k, timeout, batch_size)[0]
        if isinstance(image, list | tuple) or isinstance(image, Iterator):
            items = list(image)
            requests = self._hf_requests(items, candidate_labels)
            sources = [source for source, _ in requests]
            return self._hf_detect(
                sources, [lab for _, lab in requests], threshold, top_k, timeout, batch_size
            )
        if candidate_labels is None:
            raise ValueError("give candidate_labels (a list of names or a comma-separated string)")
        return self._hf_detect([image], [candidate_labels], threshold, top_k, timeout, batch_size)[0]

    @staticmethod
    def _hf_requests(items: list[Any], candidate_labels: Any) -> list[tuple[Any, Any]]:
        """(image, labels) per image of a list call, with the pipeline's rules for ``candidate_labels``."""
        if not items:
            return []
        if all(isinstance(item, dict) for item in items):
            requests = []
            for index, item in enumerate(items):
                missing = {"image", "candidate_labels"} - set(item)
                if missing:
                    raise ValueError(f"input {index} lacks {', '.join(sorted(missing))}")
                requests.append((item["image"], item["candidate_labels"]))
            return requests
        if any(isinstance(item, dict) for item in items):
            raise ValueError(
                "give a list of images or a list of {'image', 'candidate_labels'} dicts, not both"
            )
        if candidate_labels is None:
            raise ValueError("give candidate_labels (for every image, or one list per image)")
        if isinstance(candidate_labels, str) or all(isinstance(x, str) for x in candidate_labels):
            return [(item, candidate_labels) for item in items]
        per_image = list(candidate_labels)
        if not all(
            isinstance(labels, list | tuple) and all(isinstance(x, str) for x in labels)
            for labels in per_image
        ):
            raise ValueError(
                "candidate_labels must be a string, a flat list of strings, or per-image label lists."
            )
        if len(per_image) != len(items):
            raise ValueError(f"Got {len(items)} images but {len(per_image)} candidate label lists.")
        return list(zip(items, per_image))

    def _hf_detect(
        self,
        images: list[Any],
        candidate_labels: list[Any],
        threshold: float,
        top_k: int | None,
        timeout: float | None,
        batch_size: int,
    ) -> list[list[dict[str, Any]]]:
        """Pipeline-format results of ``images[i]`` with ``candidate_labels[i]``; images with the same labels
        are predicted together."""
        from glip.remote import TIMEOUT_S, fetch_image, is_url

        labels_of = [
            labels.split(",") if isinstance(labels, str) else [str(x) for x in labels]
            for labels in candidate_labels
        ]
        loaded = [fetch_image(img, timeout=timeout or TIMEOUT_S) if is_url(img) else img for img in images]
        results: list[list[dict[str, Any]]] = [[] for _ in images]
        groups: dict[tuple[str, ...], list[int]] = {}
        for index, labels in enumerate(labels_of):
            groups.setdefault(tuple(labels), []).append(index)
        for labels, indices in groups.items():
            found = self.predict(
                [loaded[i] for i in indices], classes=list(labels), threshold=threshold, batch_size=batch_size
            )
            assert isinstance(found, list)
            for index, prediction in zip(indices, found):
                out = [
                    {
                        "score": float(score),
                        "label": labels[label],
                        "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), box)),
                    }
                    # torch's int() truncates toward zero, as the pipeline's _get_bounding_box does
                    for box, score, label in zip(
                        prediction.boxes.int().tolist(),
                        prediction.scores.tolist(),
                        prediction.labels.tolist(),
                    )
                ]
                results[index] = out[:top_k] if top_k else out
        return results


def prompt_names(prompts: Sequence[Prompt]) -> list[str]:
    """The names of a request, from its prompts: ``names[label - 1]`` is the name of ``label``."""
    if not prompts:
        raise PromptError("no prompts given")
    by_label: dict[int, str] = {}
    for prompt in prompts:
        for label, name in zip(prompt.labels, prompt.names):
            if label < 1:
                raise PromptError(f"prompt labels are 1-based indices into the names, got {label}")
            by_label[int(label)] = name
    return [by_label.get(i, f"label {i}") for i in range(1, max(by_label, default=0) + 1)]
