"""ONNX export of the whole GLIP forward, and running it in onnxruntime with glip's own pre/post-processing.

The graph (``model.onnx``) maps a padded, normalised image batch and tokenized prompts to the raw head outputs:

    images          (B, 3, H, W) float32, H and W multiples of 32 (at least :data:`MIN_SIDE`)
    input_ids       (B, T) int64   } T: 2 .. max_query_len tokens
    attention_mask  (B, T) int64   }
    -> token_logits_{l}   (B, H_l*W_l, T)   for the L pyramid levels l = 0 .. L-1 (P3..P7)
       box_regression_{l} (B, 4, H_l, W_l)
       centerness_{l}     (B, 1, H_l, W_l)

B, H, W and T are dynamic. Anchors (they only depend on the level shapes), the phrase scores, NMS and the
mapping to image pixels stay in glip (:class:`OnnxGLIP`), so results match the eager predictor.

Export goes through ``torch.onnx.export(dynamo=True)`` (``torch.export`` + onnxscript), opset
:data:`DEFAULT_OPSET`. The deformable convolutions of the DyHead take their ``grid_sample`` path
(:func:`glip.models.dyhead.deform_conv3x3_grid_sample`: ONNX ``GridSample``, opset >= 16, plus a MatMul);
``torchvision.ops.deform_conv2d`` has no ONNX exporter (ONNX ``DeformConv`` is opset 19 and onnxruntime has
no CPU kernel for it). The memory-bounding loops (glibc mmap threshold of glip/memory.py, Swin window and
MLP chunks, the fusion's head groups, the deformable conv's row bands) are switched off while tracing
(:func:`export_mode`): they compute the same numbers in pieces, and their piece counts depend on the shapes.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from glip.config import GLIPConfig
from glip.fileio import atomic_write_path, atomic_write_text
from glip.models.anchors import AnchorGenerator
from glip.models.glip import GLIP
from glip.models.head import HeadOutput
from glip.models.language import TextFeatures
from glip.postprocess import Detections, LabelToTokens, postprocess_image
from glip.preprocess import ImageBatch

ONNX_FILE = "model.onnx"
CONFIG_FILE = "config.json"  # the GLIPConfig, as glip.weights.loading.save_model writes it
EXPORT_INFO_FILE = "onnx.json"  # inputs/outputs, opset, tokenizer, size limits
DEFAULT_OPSET = 18
# smallest padded side: P7 (stride 128) must be >= 2 pixels for one traced deformable-conv path
MIN_SIDE = 160
MAX_SIDE = 2048
TOKENIZER = "bert-base-uncased"  # glip.text.tokenizer.get_tokenizer builds it offline
INPUT_NAMES = ("images", "input_ids", "attention_mask")
_UNBOUNDED = 1 << 62


class ExportError(ValueError):
    """The model or the export arguments cannot produce / run an ONNX graph; the message says what to do."""


def output_names(num_levels: int) -> list[str]:
    """``token_logits_0.., box_regression_0.., centerness_0..`` (graph output order)."""
    return [
        f"{kind}_{level}"
        for kind in ("token_logits", "box_regression", "centerness")
        for level in range(num_levels)
    ]


@contextlib.contextmanager
def export_mode(model: nn.Module) -> Iterator[None]:
    """Switch off the shape-dependent memory-bounding code paths of ``model`` (restored on exit).

    Outputs do not change: each of these loops computes the same tensors in pieces. Also turns off the
    text-padding trim of :meth:`glip.models.glip.GLIP.encode_text` (a data-dependent length); :class:`OnnxGLIP`
    trims its inputs instead.
    """
    import glip.memory
    import glip.models.dyhead as dyhead

    saved: list[tuple[Any, str, Any]] = [
        (glip.memory, "RELEASE", "never"),
        (dyhead, "DEFORM_COLUMNS_MAX_ELEMENTS", _UNBOUNDED),
    ]
    if hasattr(model, "trim_text_padding"):
        saved.append((model, "trim_text_padding", False))
    for module in model.modules():
        for name in ("windows_per_chunk", "tokens_per_chunk", "max_logit_elements"):
            if name in vars(module) or hasattr(type(module), name):
                saved.append((module, name, _UNBOUNDED))
    previous = [(owner, name, getattr(owner, name)) for owner, name, _ in saved]
    try:
        for owner, name, value in saved:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in reversed(previous):
            setattr(owner, name, value)


class ExportableGLIP(nn.Module):
    """``(images, input_ids, attention_mask) -> (token_logits_*, box_regression_*, centerness_*)``: the
    :meth:`GLIP.forward` computation (backbone, FPN, text encoder, VL-DyHead) without anchors and
    post-processing, as a flat tuple of tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        fpn = self.model.encode_images(images)
        text = self.model.encode_text(input_ids, attention_mask)
        head = self.model.forward_head(fpn, text)
        return (*head.token_logits, *head.box_regression, *head.centerness)


def _check_side(value: int, what: str) -> int:
    if value % 32 or not MIN_SIDE <= value <= MAX_SIDE:
        raise ExportError(
            f"{what} {value} must be a multiple of 32 between {MIN_SIDE} and {MAX_SIDE} (the padded image size)"
        )
    return value


def to_onnx(
    model: nn.Module,
    out_dir: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    image_size: tuple[int, int] = (320, 320),
    num_tokens: int = 16,
    batch_size: int = 2,
) -> Path:
    """Export ``model`` (a :class:`glip.models.glip.GLIP`) to ``out_dir/model.onnx``; returns that path.

    ``image_size`` (H, W), ``num_tokens`` and ``batch_size`` only shape the example inputs of the trace:
    batch, height, width (multiples of 32, :data:`MIN_SIDE`..:data:`MAX_SIDE`) and token count (2 ..
    ``max_query_len``) stay dynamic. Writes ``config.json`` (the GLIPConfig) and ``onnx.json`` (names,
    opset, tokenizer, limits) beside the graph.
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            "ONNX export needs onnx and onnxscript: pip install '.[export]' (in the glip checkout)"
        ) from exc
    config: GLIPConfig = model.config  # type: ignore[assignment]
    height, width = (_check_side(int(s), n) for s, n in zip(image_size, ("image height", "image width")))
    max_tokens = int(config.text.max_query_len)
    if not 2 <= num_tokens <= max_tokens:
        raise ExportError(
            f"num_tokens {num_tokens} must be between 2 and the model's max_query_len {max_tokens}"
        )
    if opset < 16:
        raise ExportError(f"opset {opset} has no GridSample (the deformable convs need it): use opset >= 16")
    if batch_size < 2:
        raise ExportError(
            "batch_size must be >= 2 for the batch axis to stay dynamic (torch.export specialises 1)"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, height, width, generator=generator).to(device)
    input_ids = torch.randint(1000, 2000, (batch_size, num_tokens), generator=generator).to(device)
    attention_mask = torch.ones(batch_size, num_tokens, dtype=torch.long, device=device)
    attention_mask[-1, -1] = 0  # some padding in the example (the masked path is the traced one anyway)
    batch = torch.export.Dim("batch", min=1, max=1024)
    rows = torch.export.Dim("rows32", min=MIN_SIDE // 32, max=MAX_SIDE // 32)
    cols = torch.export.Dim("cols32", min=MIN_SIDE // 32, max=MAX_SIDE // 32)
    tokens = torch.export.Dim("tokens", min=2, max=max_tokens)
    dynamic_shapes = (
        {0: batch, 2: 32 * rows, 3: 32 * cols},
        {0: batch, 1: tokens},
        {0: batch, 1: tokens},
    )
    num_levels = len(config.anchors.strides)
    names = output_names(num_levels)
    wrapper = ExportableGLIP(model).eval()
    was_training = model.training
    model.eval()
    path = out_dir / ONNX_FILE
    start = time.perf_counter()
    try:
        with export_mode(model), torch.no_grad():
            program = torch.onnx.export(
                wrapper,
                (images, input_ids, attention_mask),
                None,
                dynamo=True,
                opset_version=opset,
                input_names=list(INPUT_NAMES),
                output_names=names,
                dynamic_shapes=dynamic_shapes,
                verbose=False,
            )
        assert program is not None
        atomic_write_path(path, lambda tmp: program.save(str(tmp), external_data=False))
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    atomic_write_text(out_dir / CONFIG_FILE, config.to_json())
    info = {
        "format": "glip-onnx",
        "onnx_file": ONNX_FILE,
        "opset": opset,
        "inputs": list(INPUT_NAMES),
        "outputs": names,
        "num_levels": num_levels,
        "tokenizer": TOKENIZER,
        "max_query_len": max_tokens,
        "size_divisibility": 32,
        "min_side": MIN_SIDE,
        "max_side": MAX_SIDE,
        "export_seconds": round(seconds, 2),
        "example": {"batch": batch_size, "image_size": [height, width], "num_tokens": num_tokens},
    }
    atomic_write_text(out_dir / EXPORT_INFO_FILE, json.dumps(info, indent=2) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- running
class OnnxGLIP:
    """A directory written by :func:`to_onnx`, run with onnxruntime (CPU provider by default).

    ``detect_batch`` is the ONNX counterpart of the eager predictor's per-batch step: the ONNX forward, then
    glip's anchors (:class:`glip.models.anchors.AnchorGenerator`) and post-processing
    (:func:`glip.postprocess.postprocess_image`) with the model's ``PostprocessConfig``.
    """

    def __init__(
        self, directory: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0
    ) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise ExportError(
                "running an exported model needs onnxruntime: pip install '.[export]' (in the glip checkout)"
            ) from exc
        self.directory = Path(directory)
        graph = self.directory / ONNX_FILE
        if not graph.is_file() or not (self.directory / CONFIG_FILE).is_file():
            raise ExportError(
                f"{self.directory} is not an exported glip model (needs {ONNX_FILE} and {CONFIG_FILE}): "
                "write one with glip.export.onnx.to_onnx(model, DIR)"
            )
        self.config = GLIPConfig.from_dict(json.loads((self.directory / CONFIG_FILE).read_text()))
        info_path = self.directory / EXPORT_INFO_FILE
        self.info: dict[str, Any] = json.loads(info_path.read_text()) if info_path.is_file() else {}
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(graph), options, providers=list(providers))
        self.num_levels = len(self.config.anchors.strides)
        self.anchor_generator = AnchorGenerator(self.config.anchors.sizes, self.config.anchors.strides)
        self.max_query_len = int(self.config.text.max_query_len)

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, list[torch.Tensor]]:
        """images (B, 3, H, W); input_ids / attention_mask (B, T) -> ``token_logits`` (L x (B, HW_l, T')),
        ``box_regression`` (L x (B, 4, H_l, W_l)), ``centerness`` (L x (B, 1, H_l, W_l)).

        Text padding beyond the longest prompt is dropped first (T' <= T), as ``GLIP.encode_text`` does.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ExportError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        height, width = int(images.shape[-2]), int(images.shape[-1])
        _check_side(height, "padded image height")
        _check_side(width, "padded image width")
        if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
            raise ExportError(
                f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} must be "
                "the same (B, T)"
            )
        length = max(int(attention_mask.sum(dim=1).max()), 2)  # the graph's token axis starts at 2
        if length > self.max_query_len:
            raise ExportError(f"{length} tokens exceed the model's max_query_len {self.max_query_len}")
        if length > input_ids.shape[1]:  # a 1-token prompt: pad to 2 (padding is masked out)
            pad = length - input_ids.shape[1]
            input_ids = torch.nn.functional.pad(input_ids, (0, pad))
            attention_mask = torch.nn.functional.pad(attention_mask, (0, pad))
        feeds = {
            "images": np.ascontiguousarray(images.detach().cpu().float().numpy()),
            "input_ids": np.ascontiguousarray(input_ids[:, :length].detach().cpu().long().numpy()),
            "attention_mask": np.ascontiguousarray(attention_mask[:, :length].detach().cpu().long().numpy()),
        }
        outputs = [torch.from_numpy(o) for o in self.session.run(None, feeds)]
        levels = self.num_levels
        return {
            "token_logits": outputs[:levels],
            "box_regression": outputs[levels : 2 * levels],
            "centerness": outputs[2 * levels : 3 * levels],
        }

    def detect_batch(
        self,
        batch: ImageBatch,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        label_to_tokens: LabelToTokens | Sequence[LabelToTokens],
    ) -> list[Detections]:
        """One prompt (``input_ids`` (1, T) or (B, T)) over a padded batch -> detections per image, boxes in
        each image's resized (unpadded) frame, exactly as ``GLIP.postprocess``."""
        size = len(batch.image_sizes)
        if input_ids.shape[0] == 1 and size > 1:
            input_ids, attention_mask = input_ids.expand(size, -1), attention_mask.expand(size, -1)
        raw = self.forward(batch.tensors, input_ids, attention_mask)
        shapes = [(int(r.shape[-2]), int(r.shape[-1])) for r in raw["box_regression"]]
        anchors = self.anchor_generator.grid_anchors(shapes)
        maps = [label_to_tokens] * size if isinstance(label_to_tokens, Mapping) else list(label_to_tokens)
        post = self.config.postprocess
        return [
            postprocess_image(
                [t[index] for t in raw["token_logits"]],
                [r[index] for r in raw["box_regression"]],
                [c[index] for c in raw["centerness"]],
                anchors,
                image_size,
                maps[index],
                pre_nms_thresh=post.pre_nms_thresh,
                pre_nms_top_n=post.pre_nms_top_n,
                nms_thresh=post.nms_thresh,
                detections_per_img=post.detections_per_img,
                min_size=post.min_size,
            )
            for index, image_size in enumerate(batch.image_sizes)
        ]


def level_shapes(height: int, width: int, strides: Sequence[int]) -> list[tuple[int, int]]:
    """(H_l, W_l) of the pyramid levels of a padded (H, W) input: ceil(H / s_l), ceil(W / s_l) (each level
    halves the previous one with a padded stride-2 conv; :class:`OnnxModel` checks the graph agrees)."""
    return [(-(-height // s), -(-width // s)) for s in strides]


class _DeferredImages(list):  # type: ignore[type-arg]
    """What :meth:`OnnxModel.encode_images` returns in place of the FPN maps: L empty ``(B, 0, H_l, W_l)``
    tensors (their shapes are all the anchors need) plus the padded batch itself (``images``)."""

    images: torch.Tensor


class OnnxModel(nn.Module):
    """The exported graph behind the part of the :class:`glip.models.glip.GLIP` interface that
    :class:`glip.predictor.GLIPPredictor` uses (``config``, ``encode_images``, ``encode_text``,
    ``forward_head``, ``anchor_generator``, ``postprocess``), so ``GLIPPredictor.from_onnx(DIR)`` runs the
    predictor's own prompts, pre-processing, size grouping and post-processing with onnxruntime doing the forward.

    The graph computes backbone, text encoder and head in one call, so the eager steps are deferred:
    ``encode_images`` keeps the padded batch and returns empty per-level placeholders (B, 0, H_l, W_l);
    ``encode_text`` returns the token ids as the "text features" (``hidden`` = ``embedded`` = ids (1, T, 1),
    ``mask`` (1, T)); ``forward_head`` runs the graph. Hence the backbone runs once per prompt (the eager model
    runs it once per image). No mask head: the graph does not output the tower features.
    """

    def __init__(
        self, directory: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0
    ) -> None:
        super().__init__()
        self.runner = OnnxGLIP(directory, providers, threads)
        self.config = self.runner.config
        self.anchor_generator = self.runner.anchor_generator
        self.strides = tuple(int(s) for s in self.config.anchors.strides)

    # GLIP.postprocess only reads self.config: the same code turns the graph's outputs into detections
    postprocess = GLIP.postprocess

    def encode_images(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (B, 3, H, W) -> L empty maps (B, 0, H_l, W_l) (:func:`level_shapes`) carrying ``images``."""
        shapes = level_shapes(int(images.shape[-2]), int(images.shape[-1]), self.strides)
        levels = _DeferredImages(images.new_empty(images.shape[0], 0, h, w) for h, w in shapes)
        levels.images = images
        return levels

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        """(B, T) ids and mask -> TextFeatures with the ids as (B, T, 1) ``hidden`` / ``embedded``."""
        ids = input_ids[..., None]
        return TextFeatures(hidden=ids, embedded=ids, mask=attention_mask)

    def forward_head(self, fpn: list[torch.Tensor], text: TextFeatures, causal: bool = False) -> HeadOutput:
        """Run the graph on ``fpn.images`` and the ids in ``text`` -> the raw head outputs (``fused_text`` and
        ``features`` are not exported: empty)."""
        if causal or not isinstance(fpn, _DeferredImages):
            raise ExportError("an ONNX model only runs through GLIPPredictor (from_onnx), non-causal")
        raw = self.runner.forward(fpn.images, text.hidden[..., 0], text.mask)
        for got, want in zip(raw["box_regression"], fpn):
            if got.shape[-2:] != want.shape[-2:]:
                raise ExportError(f"level shape {tuple(got.shape[-2:])} != expected {tuple(want.shape[-2:])}")
        empty = fpn.images.new_empty(0)
        return HeadOutput(
            token_logits=raw["token_logits"],
            box_regression=raw["box_regression"],
            centerness=raw["centerness"],
            fused_text=empty,
            features=[],
        )


def export_summary(directory: str | Path) -> dict[str, Any]:
    """``onnx.json`` plus the graph's file size in bytes (for reports and the CLI)."""
    directory = Path(directory)
    info = json.loads((directory / EXPORT_INFO_FILE).read_text())
    return {**info, "onnx_bytes": (directory / ONNX_FILE).stat().st_size}


__all__ = [
    "CONFIG_FILE",
    "DEFAULT_OPSET",
    "EXPORT_INFO_FILE",
    "ExportError",
    "ExportableGLIP",
    "MAX_SIDE",
    "MIN_SIDE",
    "ONNX_FILE",
    "OnnxGLIP",
    "OnnxModel",
    "export_mode",
    "export_summary",
    "level_shapes",
    "output_names",
    "to_onnx",
]
