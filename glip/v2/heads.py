"""Saving and loading GLIPv2's VL-understanding heads beside a saved GLIP model.

A model directory written by :func:`glip.weights.loading.save_model` may also hold

* ``vqa_head.json`` (``{"answers": [...], "dropout": p}``) + ``vqa_head.safetensors``
  (:class:`glip.v2.vqa.VQAHead`);
* ``caption_head.json`` (``{"hidden_dim": D, "vocab_size": V}``) + ``caption_head.safetensors``
  (:class:`glip.v2.captioning.CaptionHead`, its decoder tied to the model's word embeddings).

:func:`load_vl_heads` wraps one GLIP module into :class:`~glip.v2.vqa.GLIPForVQA` and
:class:`~glip.v2.captioning.GLIPForCaptioning` sharing it: all weights shared, as in GLIPv2. Weights are
loaded strictly, from safetensors only (no pickle).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from glip.fileio import atomic_write_path, atomic_write_text
from glip.models.glip import GLIP
from glip.v2.captioning import GLIPForCaptioning
from glip.v2.vqa import GLIPForVQA

__all__ = ["CAPTION_HEAD_FILES", "VQA_HEAD_FILES", "has_vl_heads", "load_vl_heads", "save_vl_heads"]

VQA_HEAD_FILES = ("vqa_head.json", "vqa_head.safetensors")
CAPTION_HEAD_FILES = ("caption_head.json", "caption_head.safetensors")


def _write(module: torch.nn.Module, directory: Path, files: tuple[str, str], meta: dict, half: bool) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    atomic_write_path(directory / files[1], lambda tmp: save_file(state, str(tmp)))
    atomic_write_text(directory / files[0], json.dumps(meta, indent=2) + "\n")


def _read(module: torch.nn.Module, weights: Path) -> None:
    from safetensors.torch import load_file

    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
    module.load_state_dict(state, strict=True)


def save_vl_heads(
    directory: str | Path,
    vqa: GLIPForVQA | None = None,
    captioner: GLIPForCaptioning | None = None,
    half: bool = False,
) -> Path:
    """Write the heads of ``vqa`` / ``captioner`` into ``directory`` (atomically; fp16 with ``half``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if vqa is not None:
        dropout = next((m.p for m in vqa.head.modules() if isinstance(m, torch.nn.Dropout)), 0.0)
        _write(vqa.head, directory, VQA_HEAD_FILES, {"answers": list(vqa.answers), "dropout": dropout}, half)
    if captioner is not None:
        hidden, vocab = captioner.word_embeddings().shape[1], captioner.word_embeddings().shape[0]
        _write(
            captioner.head, directory, CAPTION_HEAD_FILES, {"hidden_dim": hidden, "vocab_size": vocab}, half
        )
    return directory


def has_vl_heads(directory: str | Path) -> dict[str, bool]:
    """``{"vqa": bool, "caption": bool}``: which heads ``directory`` holds (both files present)."""
    directory = Path(directory)
    return {
        name: all((directory / f).is_file() for f in files)
        for name, files in (("vqa", VQA_HEAD_FILES), ("caption", CAPTION_HEAD_FILES))
    }


def load_vl_heads(directory: str | Path, glip: GLIP) -> tuple[GLIPForVQA | None, GLIPForCaptioning | None]:
    """The VQA and captioning wrappers around ``glip`` for the heads saved in ``directory`` (None where a
    head is absent). Raises ``ValueError`` when a saved head does not fit ``glip`` (another text encoder)."""
    directory = Path(directory)
    present = has_vl_heads(directory)
    vqa = captioner = None
    if present["vqa"]:
        meta = json.loads((directory / VQA_HEAD_FILES[0]).read_text())
        vqa = GLIPForVQA(glip, meta["answers"], dropout=float(meta.get("dropout", 0.1)))
        _read(vqa.head, directory / VQA_HEAD_FILES[1])
        vqa.eval()
    if present["caption"]:
        meta = json.loads((directory / CAPTION_HEAD_FILES[0]).read_text())
        captioner = GLIPForCaptioning(glip)
        shape = tuple(captioner.word_embeddings().shape)
        if shape != (meta["vocab_size"], meta["hidden_dim"]):
            raise ValueError(
                f"the caption head in {directory} was trained for a {meta['vocab_size']} x {meta['hidden_dim']} "
                f"vocabulary, the model has {shape[0]} x {shape[1]}"
            )
        _read(captioner.head, directory / CAPTION_HEAD_FILES[1])
        captioner.eval()
    return vqa, captioner
