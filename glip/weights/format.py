"""glip's on-disk model format: the file names and the error every loader raises (no torch imported)."""

from __future__ import annotations

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or does not fit the architecture; the message says why."""
