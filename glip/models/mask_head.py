"""GLIPv2's language-guided mask head on GLIP's tower features; its paste-back and its files.

Per box (ground-truth boxes in training, detected boxes at inference):

    tower features (HeadOutput.features, L maps (B, C, H_l, W_l))
      --RoIAlign (level by box size, as FPN's Mask R-CNN)--> (K, C, 14, 14)
      --num_convs x (3x3 conv + ReLU), 2x transposed conv + ReLU--> (K, C', 28, 28)
    network-input image (B, 3, H, W) --RoIAlign at 28 x 28, stride 1--> (K, 3, 28, 28)      [image_channels = 3]
      concatenated with the above --2 x (3x3 conv + ReLU) to C'/2--> (K, C'/2, 28, 28)
      --1x1 conv--> pixel embeddings (K, E, 28, 28)
    fused text (HeadOutput.fused_text, (B, T, D)) --mean over the box's phrase tokens--> (K, D)
      --LayerNorm + Linear--> word embedding (K, E)
    mask logit = <pixel embedding, word embedding> / sqrt(E) + bias                     -> (K, 28, 28)

The tower features are stride 8 and coarser: an object 25 input pixels wide covers three of their cells, so
their mask alone is a blob. The image itself, pooled at the mask's resolution (``image_channels = 3``), gives
the refining convolutions the object's edges (the role of Mask R-CNN's stride-4 features; GLIP's pyramid starts
at stride 8). Heads written before this existed (no ``image_channels`` in their json) load with it off.

This is the classification-to-matching trick of GLIP applied to pixels: a pixel is "in the mask" when its
embedding matches the words of the box's phrase, so the head has no class-specific output and works for any
vocabulary. Inference (:func:`detection_masks`, :func:`paste_masks`): sigmoid, pasted back into the image
(bilinear on the box's grid, > ``mask_threshold``). Training (second stage, the detector frozen) is
``train_segmentation`` of the GLIPv2 tasks (docs/segmentation.md).

The head lives beside the model, in ``mask_head.safetensors`` + ``mask_head.json`` (:func:`save_mask_head` /
:func:`load_mask_head`); the detector's checkpoint format and configs are unchanged.

Boxes are the legacy "+1" xyxy used everywhere in glip (pixels ``x1..x2`` inclusive); the head uses the
continuous box ``[x1, x2 + 1) x [y1, y2 + 1)``, with ``aligned=True`` RoIAlign (pixel i covers [i, i + 1)).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

__all__ = [
    "MASK_HEAD_CONFIG_FILE",
    "MASK_HEAD_WEIGHTS_FILE",
    "MaskHead",
    "MaskHeadConfig",
    "continuous_boxes",
    "detection_masks",
    "find_mask_head",
    "load_mask_head",
    "paste_masks",
    "phrase_features",
    "save_mask_head",
]

MASK_HEAD_WEIGHTS_FILE = "mask_head.safetensors"
MASK_HEAD_CONFIG_FILE = "mask_head.json"


# ----------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class MaskHeadConfig:
    """The mask head. ``in_channels`` / ``text_dim`` / ``strides`` must match the detector:
    :meth:`for_model` reads them from a :class:`glip.config.GLIPConfig`."""

    in_channels: int = 256  # tower channels (HeadConfig.channels)
    text_dim: int = 768  # fused text width (BERT hidden size)
    strides: tuple[int, ...] = (8, 16, 32)  # of the tower levels RoIAlign may use (the finest first)
    embed_dim: int = 64  # E: pixel / word embedding width
    conv_channels: int = 128
    num_convs: int = 4
    roi_size: int = 14  # RoIAlign output; masks are 2 x roi_size
    sampling_ratio: int = 2
    canonical_size: float = 224.0  # a box of this side goes to canonical_level (FPN paper, eq. 1)
    canonical_level: int = 4
    mask_threshold: float = 0.5
    image_channels: int = 3  # the network input pooled at the mask's resolution (0: tower features only)

    @property
    def mask_size(self) -> int:
        return 2 * self.roi_size

    @classmethod
    def for_model(cls, config: Any, **overrides: Any) -> MaskHeadConfig:
        """The head for a detector of ``config`` (a GLIPConfig): its tower width, text width and the first
        three pyramid strides."""
        return cls(
            in_channels=int(config.head.channels),
            text_dim=int(config.text.bert["hidden_size"]),
            strides=tuple(int(s) for s in config.anchors.strides[:3]),
            **overrides,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MaskHeadConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown MaskHeadConfig keys: {sorted(unknown)}")
        data = {"image_channels": 0, **data}  # heads saved before the image input existed have none
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# ----------------------------------------------------------------------------------------------- helpers


def continuous_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) legacy xyxy (``x2`` inclusive) -> continuous ``[x1, y1, x2 + 1, y2 + 1]``."""
    return boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])


def phrase_features(fused_text: torch.Tensor, token_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean fused feature of each box's phrase tokens.

    fused_text: (B, T, D); token_maps: B tensors (N_b, >= T) {0, 1} (``Target.token_map``, or one-hot rows of
    a detection's label tokens). Returns (sum N_b, D). A row without any token raises ``ValueError``.
    """
    if len(token_maps) != fused_text.shape[0]:
        raise ValueError(f"{len(token_maps)} token maps for a batch of {fused_text.shape[0]} texts")
    length = fused_text.shape[1]
    out = []
    for index, token_map in enumerate(token_maps):
        weights = token_map[:, :length].to(fused_text.dtype)  # (N_b, T)
        counts = weights.sum(dim=1, keepdim=True)
        if bool((counts == 0).any()):
            raise ValueError(f"image {index}: a box's phrase has no token within the {length} text tokens")
        out.append(weights @ fused_text[index] / counts)  # (N_b, D)
    if not out:
        return fused_text.new_zeros(0, fused_text.shape[-1])
    return torch.cat(out)


def _label_token_maps(
    labels: torch.Tensor, label_to_tokens: Mapping[int, Sequence[int]], length: int
) -> torch.Tensor:
    """(N,) 1-based labels -> (N, length) {0, 1} rows marking each label's tokens."""
    rows = torch.zeros(len(labels), length)
    for row, label in enumerate(labels.tolist()):
        positions = [p for p in label_to_tokens[int(label)] if p < length]
        rows[row, positions] = 1.0
    return rows


# ----------------------------------------------------------------------------------------------- the head


class MaskHead(nn.Module):
    """Language-guided mask head (see the module docstring)."""

    def __init__(self, config: MaskHeadConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels = config.in_channels
        for _ in range(config.num_convs):
            layers += [nn.Conv2d(channels, config.conv_channels, 3, padding=1), nn.ReLU(inplace=True)]
            channels = config.conv_channels
        self.convs = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.refine: nn.Sequential | None = None
        if config.image_channels > 0:
            width = max(channels // 2, 1)
            self.refine = nn.Sequential(
                nn.Conv2d(channels + config.image_channels, width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1),
                nn.ReLU(inplace=True),
            )
            channels = width
        self.pixel_embed = nn.Conv2d(channels, config.embed_dim, 1)
        self.word_norm = nn.LayerNorm(config.text_dim)
        self.word_proj = nn.Linear(config.text_dim, config.embed_dim)
        self.bias = nn.Parameter(torch.zeros(1))
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def levels(self, boxes: torch.Tensor) -> torch.Tensor:
        """(K, 4) continuous boxes -> (K,) index of the tower level each is pooled from."""
        cfg = self.config
        first = math.log2(cfg.strides[0])
        side = (
            (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-6) * (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)
        ).sqrt()
        level = torch.floor(cfg.canonical_level + torch.log2(side / cfg.canonical_size) + 1e-6)
        return (level - first).clamp(0, len(cfg.strides) - 1).to(torch.int64)

    @staticmethod
    def _rois(boxes: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """B tensors (N_b, 4) legacy xyxy -> (K, 5): image index, continuous x1, y1, x2, y2."""
        return torch.cat(
            [
                torch.cat(
                    [torch.full((len(b), 1), float(i), dtype=b.dtype, device=b.device), continuous_boxes(b)],
                    1,
                )
                for i, b in enumerate(boxes)
            ]
        ).to(dtype)

    def pool(self, features: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        """features: L maps (B, C, H_l, W_l) (the first ``len(strides)`` are used); boxes: B tensors (N_b, 4)
        legacy xyxy in the input frame -> (sum N_b, C, roi_size, roi_size)."""
        cfg = self.config
        if len(features) < len(cfg.strides):
            raise ValueError(f"{len(features)} feature maps, the mask head needs {len(cfg.strides)}")
        if len(boxes) != features[0].shape[0]:
            raise ValueError(f"{len(boxes)} box lists for a batch of {features[0].shape[0]} images")
        rois = self._rois(boxes, features[0].dtype)
        out = features[0].new_zeros(len(rois), features[0].shape[1], cfg.roi_size, cfg.roi_size)
        levels = self.levels(rois[:, 1:])
        for level, stride in enumerate(cfg.strides):
            chosen = torch.nonzero(levels == level).reshape(-1)
            if len(chosen):
                out[chosen] = roi_align(
                    features[level],
                    rois[chosen],
                    output_size=cfg.roi_size,
                    spatial_scale=1.0 / stride,
                    sampling_ratio=cfg.sampling_ratio,
                    aligned=True,
                )
        return out

    def pool_image(self, images: torch.Tensor, boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        """images: (B, 3, H, W) network input; boxes: B tensors (N_b, 4) legacy xyxy in that frame ->
        (sum N_b, 3, M, M), M = ``mask_size``: each box's pixels on its mask grid."""
        if images.shape[0] != len(boxes) or images.shape[1] != self.config.image_channels:
            raise ValueError(
                f"images of shape {tuple(images.shape)} for {len(boxes)} box lists: the mask head needs "
                f"(B, {self.config.image_channels}, H, W), one image per box list"
            )
        size = self.config.mask_size
        return roi_align(
            images, self._rois(boxes, images.dtype), output_size=size, sampling_ratio=2, aligned=True
        )

    def pixel_embeddings(self, pooled: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """(K, C, roi, roi) tower features [+ (K, 3, 2 roi, 2 roi) pooled image] -> (K, E, 2 roi, 2 roi)."""
        hidden = F.relu(self.upsample(self.convs(pooled)))
        if self.refine is not None:
            if image is None:
                raise ValueError("this mask head refines with the image: pass the network input (images=...)")
            hidden = self.refine(torch.cat([hidden, image.to(hidden.dtype)], dim=1))
        return self.pixel_embed(hidden)

    def word_embeddings(self, words: torch.Tensor) -> torch.Tensor:
        """(K, D) phrase features -> (K, E)."""
        return self.word_proj(self.word_norm(words))

    def forward(
        self,
        features: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        words: torch.Tensor,
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mask logits.

        features: tower maps (B, C, H_l, W_l) (``HeadOutput.features``); boxes: B tensors (N_b, 4) legacy
        xyxy in the network-input frame; words: (sum N_b, D) phrase features (:func:`phrase_features`);
        images: (B, 3, H, W) the network input (``ImageBatch.tensors``), needed when ``config.image_channels``.
        Returns (sum N_b, M, M) logits, M = ``config.mask_size``, on each box's grid.
        """
        image = self.pool_image(images, boxes) if self.refine is not None and images is not None else None
        pixels = self.pixel_embeddings(self.pool(features, boxes), image)  # (K, E, M, M)
        if words.shape[0] != pixels.shape[0]:
            raise ValueError(f"{words.shape[0]} phrase features for {pixels.shape[0]} boxes")
        word = self.word_embeddings(words.to(pixels.dtype))  # (K, E)
        logits = torch.einsum("kemn,ke->kmn", pixels, word) / math.sqrt(self.config.embed_dim)
        return logits + self.bias


# ----------------------------------------------------------------------------------------------- inference


def paste_masks(
    probs: torch.Tensor, boxes: torch.Tensor, image_hw: tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """Masks on the box grids -> image masks.

    probs: (N, M, M) in [0, 1]; boxes: (N, 4) *continuous* xyxy in the target image's pixels (pixel i covers
    [i, i + 1)); image_hw: (H, W). Returns (N, H, W) bool: bilinear on the grid, ``> threshold``, nothing
    outside the box.
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    out = torch.zeros(len(probs), height, width, dtype=torch.bool)
    for n, (prob, box) in enumerate(zip(probs.float().cpu(), boxes.float().cpu().tolist())):
        x1, y1, x2, y2 = box
        if x2 <= x1 or y2 <= y1:
            continue
        left, top = max(int(math.floor(x1)), 0), max(int(math.floor(y1)), 0)
        right, bottom = min(int(math.ceil(x2)), width), min(int(math.ceil(y2)), height)
        if right <= left or bottom <= top:
            continue
        xs = (torch.arange(left, right, dtype=torch.float32) + 0.5 - x1) / (x2 - x1) * 2 - 1  # grid coords
        ys = (torch.arange(top, bottom, dtype=torch.float32) + 0.5 - y1) / (y2 - y1) * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]  # (1, h, w, 2)
        sampled = F.grid_sample(
            prob[None, None], grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        inside = (grid[0, ..., 0].abs() <= 1) & (grid[0, ..., 1].abs() <= 1)
        out[n, top:bottom, left:right] = (sampled[0, 0] > threshold) & inside
    return out


@torch.no_grad()
def detection_masks(
    mask_head: MaskHead,
    features: Sequence[torch.Tensor],
    fused_text: torch.Tensor,
    boxes: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    label_to_tokens: Mapping[int, Sequence[int]] | Sequence[Mapping[int, Sequence[int]]],
    images: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Mask probabilities of detections: B images' boxes (N_b, 4) legacy xyxy (network-input frame) and
    1-based labels (N_b,), each label's phrase = its tokens in ``label_to_tokens``; ``images`` the network
    input (B, 3, H, W) for a head that refines with it. Returns B tensors (N_b, M, M) in [0, 1] on each box's
    grid (paste with :func:`paste_masks`)."""
    maps = [label_to_tokens] * len(boxes) if isinstance(label_to_tokens, Mapping) else list(label_to_tokens)
    length = fused_text.shape[1]
    token_maps = [
        _label_token_maps(lab.cpu(), m, length).to(fused_text.device) for lab, m in zip(labels, maps)
    ]
    words = phrase_features(fused_text, token_maps)
    placed = [b.to(fused_text.device).float() for b in boxes]
    probs = mask_head(features, placed, words, images).float().sigmoid()
    return list(probs.split([len(b) for b in boxes]))


# ----------------------------------------------------------------------------------------------- saving


def save_mask_head(mask_head: MaskHead, directory: str | Path, half: bool = False) -> Path:
    """Write ``mask_head.safetensors`` + ``mask_head.json`` into ``directory`` (e.g. beside a saved model),
    atomically; ``half``: floating-point weights stored as fp16 (loaded back as fp32)."""
    from safetensors.torch import save_file

    from glip.fileio import atomic_write_path, atomic_write_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in mask_head.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    atomic_write_path(directory / MASK_HEAD_WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    atomic_write_text(
        directory / MASK_HEAD_CONFIG_FILE, json.dumps(mask_head.config.to_dict(), indent=2) + "\n"
    )
    return directory


def load_mask_head(path: str | Path, device: str | torch.device = "cpu") -> MaskHead:
    """A head saved by :func:`save_mask_head` (``path``: its directory or its ``.safetensors`` file), strictly.

    Raises:
        FileNotFoundError: no ``mask_head.safetensors`` / ``mask_head.json`` there.
    """
    from safetensors.torch import load_file

    path = Path(path)
    directory = path.parent if path.suffix == ".safetensors" else path
    weights, config_file = directory / MASK_HEAD_WEIGHTS_FILE, directory / MASK_HEAD_CONFIG_FILE
    if path.suffix == ".safetensors":
        weights = path
    for needed in (weights, config_file):
        if not needed.is_file():
            raise FileNotFoundError(f"mask head file not found: {needed} (written by save_mask_head)")
    head = MaskHead(MaskHeadConfig.from_dict(json.loads(config_file.read_text())))
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
    head.load_state_dict(state, strict=True)
    return head.to(device).eval()


def find_mask_head(explicit: str | Path | None, model: str | Path | None) -> Path:
    """Where the mask head of a CLI call is: ``explicit`` (``--mask-head``) or the ``--model`` directory when
    it holds ``mask_head.safetensors``. ``FileNotFoundError`` saying what to pass otherwise."""
    if explicit is not None:
        return Path(explicit)
    if model is not None and (Path(model) / MASK_HEAD_WEIGHTS_FILE).is_file():
        return Path(model)
    raise FileNotFoundError(
        f"--masks needs a mask head: pass --mask-head DIR (with {MASK_HEAD_WEIGHTS_FILE} and "
        f"{MASK_HEAD_CONFIG_FILE}, written by train_segmentation, docs/segmentation.md) or a --model directory "
        "that holds them"
    )
