"""Saving and loading GLIPv2's VL-understanding heads beside a saved GLIP model (both at once).

The files are those of :func:`glip.models.vqa.save_vqa_head` (``vqa_head.*``) and
:func:`glip.models.captioning.save_caption_head` (``caption_head.*``).
"""

from __future__ import annotations

from pathlib import Path

from glip.models.captioning import GLIPForCaptioning, load_caption_head, save_caption_head
from glip.models.glip import GLIP
from glip.models.vqa import GLIPForVQA, load_vqa_head, save_vqa_head

__all__ = ["load_vl_heads", "save_vl_heads"]


def save_vl_heads(
    directory: str | Path,
    vqa: GLIPForVQA | None = None,
    captioner: GLIPForCaptioning | None = None,
    half: bool = False,
) -> Path:
    """Write the heads of ``vqa`` / ``captioner`` into ``directory`` (atomically; fp16 with ``half``)."""
    if vqa is not None:
        save_vqa_head(vqa, directory, half)
    if captioner is not None:
        save_caption_head(captioner, directory, half)
    return Path(directory)


def load_vl_heads(directory: str | Path, glip: GLIP) -> tuple[GLIPForVQA | None, GLIPForCaptioning | None]:
    """The VQA and captioning wrappers around ``glip`` (None where a head is absent)."""
    return load_vqa_head(directory, glip), load_caption_head(directory, glip)
