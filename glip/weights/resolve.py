"""One name -> one model: what ``--model`` / ``--teacher`` accept on the command line.

``resolve_model(name)`` takes
* ``None``: the bundled demo model (with a warning saying what it is); when it cannot load, a
  :class:`CheckpointError` naming the missing package and how to install it (never a silent random model);
* ``"demo"`` / ``"demo_v2"``: the bundled GLIP / GLIPv2 demo models (``None`` takes ``demo_v2`` when it is
  installed, else ``demo``);
* ``"random:PRESET"``: a randomly initialised PRESET (seed 0, zero score bias so it shows some boxes);
* anything :func:`glip.weights.loading.load_model` accepts (released name, saved directory, ``.pth``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from glip.config import GLIPConfig, get_preset
from glip.models.glip import GLIP, build_model
from glip.runtime import resolve_device
from glip.weights.format import CheckpointError
from glip.weights.loading import load_model, resolve_config

logger = logging.getLogger("glip")

RANDOM_PREFIX = "random:"


def resolve_model(
    name: str | Path | None = None,
    config: GLIPConfig | str | Path | None = None,
    device: str | torch.device | None = "auto",
) -> GLIP:
    """The model ``name`` stands for, on ``device`` (``"auto"``: CUDA when available), in eval mode.

    ``config`` (a preset name, an official YAML or a :class:`GLIPConfig`) is the architecture of an
    official ``.pth``. Unknown names raise :class:`glip.weights.loading.CheckpointError`, unknown presets
    and devices ``ValueError``.
    """
    from glip.weights import demo  # looked up at call time (tests replace demo_model_available)

    target = resolve_device(device)
    text = None if name is None else str(name)
    if text is None:
        bundled = demo.default_bundled_name()
        if bundled is None:
            raise CheckpointError(
                f"no --model given and the bundled demo model cannot load: {demo.demo_model_problem()}. Or pass "
                "--model glip_t (a released name), a checkpoint path, or --model random:tiny_random for a randomly "
                "initialised model"
            )
        logger.warning(
            "no --model given: using the bundled demo model '%s', which only knows the synthetic world of "
            "coloured shapes (glip synth). Pass --model glip_t (or a checkpoint path) for real images.",
            bundled,
        )
        return load_model(bundled, device=target)
    if text in demo.BUNDLED:
        return load_model(text, device=target)
    if text.startswith(RANDOM_PREFIX):
        preset = text[len(RANDOM_PREFIX) :]
        logger.warning(
            "using a RANDOMLY INITIALISED '%s' model (boxes are meaningless). "
            "Pass --model glip_t (or a checkpoint path) for real detections.",
            preset,
        )
        torch.manual_seed(0)
        model = build_model(get_preset(preset))
        model.head.bias0.data.fill_(0.0)  # so a random model shows some boxes
        return model.to(target).eval()
    return load_model(text, config=resolve_config(config) if config else None, device=target)
