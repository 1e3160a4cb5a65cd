"""GLIP / GLIPv2 in pure PyTorch: open-vocabulary detection and phrase grounding.

Public API::

    import glip
    model = glip.load_model("glip_t")                   # or a .pth / a saved directory
    model = glip.build_model(glip.get_preset("tiny"))    # randomly initialised
"""

from glip.config import PRESETS, GLIPConfig, get_preset
from glip.models.glip import GLIP, GLIPOutput, build_model
from glip.postprocess import Detections
from glip.weights.loading import CheckpointError, load_model, save_model
from glip.weights.registry import available_models

__all__ = [
    "GLIP",
    "PRESETS",
    "CheckpointError",
    "Detections",
    "GLIPConfig",
    "GLIPOutput",
    "available_models",
    "build_model",
    "get_preset",
    "load_model",
    "save_model",
]

__version__ = "0.1.0"
