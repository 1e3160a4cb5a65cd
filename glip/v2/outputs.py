"""GLIPv2 VQA answers and captions of many image files, written to a folder (what ``glip ask`` and
``glip caption`` run): one JSON file of records + an annotated PNG per image.

Inputs are files or http(s) URLs (:func:`glip.remote.load_source`). A file that cannot be read or fetched
(:class:`glip.images.ImageError`) is reported through ``on_skip``, listed in
``errors.json`` and skipped; every file is written atomically. The question (for ``ask``) is checked once
before any image is read.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glip.fileio import atomic_save, atomic_write_text
from glip.images import MAX_PIXELS, ImageError
from glip.predictor import GLIPPredictor
from glip.remote import is_url, load_source, url_stem
from glip.text.tokenizer import tokenize_captions
from glip.visualize import draw_answer, draw_caption

__all__ = [
    "ANSWERS_FILE",
    "CAPTIONS_FILE",
    "ERRORS_FILE",
    "FolderResults",
    "ask_to_folder",
    "caption_to_folder",
]

ANSWERS_FILE = "answers.json"
CAPTIONS_FILE = "captions.json"
ERRORS_FILE = "errors.json"


@dataclass
class FolderResults:
    """records: one dict per image processed (``Answer.to_dict()`` / ``Caption.to_dict()``); errors:
    ``{"file", "error"}`` per skipped file; results: the Answer / Caption objects; out_dir: the folder."""

    records: list[dict[str, Any]]
    errors: list[dict[str, str]]
    results: list[Any]
    out_dir: Path


def _default_skip(message: str) -> None:
    print(f"skipped: {message}", file=sys.stderr)


def _run(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    records_file: str,
    run: Callable[[Any], Any],
    draw: Callable[[Any, Any], Any],
    max_pixels: int | None,
    on_skip: Callable[[str], None] | None,
    on_result: Callable[[Path, Any], None] | None,
) -> FolderResults:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = on_skip or _default_skip
    records, errors, results, used = [], [], [], set()
    for path in (p if is_url(p) else Path(p) for p in paths):
        try:
            image = load_source(path, max_pixels=max_pixels)
        except ImageError as exc:
            message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            report(message)
            errors.append({"file": str(path), "error": message})
            continue
        result = run(image)
        result_source = str(path)
        if hasattr(result, "entities"):
            result.entities.source = result_source
        else:
            result.source = result_source
        records.append({"file": result_source, **{k: v for k, v in result.to_dict().items() if k != "file"}})
        results.append(result)
        name = (url_stem(str(path)) if is_url(path) else path.stem) + ".png"
        while name in used:
            name = f"{Path(name).stem}_{len(used)}.png"
        used.add(name)
        drawn = draw(image, result)
        atomic_save(out / name, lambda handle, drawn=drawn: drawn.save(handle, format="PNG"))
        if on_result is not None:
            on_result(path, result)
    atomic_write_text(out / records_file, json.dumps(records, indent=1))
    if errors:
        atomic_write_text(out / ERRORS_FILE, json.dumps(errors, indent=1))
    return FolderResults(records, errors, results, out)


def ask_to_folder(
    predictor: GLIPPredictor,
    images: Sequence[str | Path],
    question: str,
    *,
    out_dir: str | Path,
    threshold: float = 0.3,
    entities: Sequence[str] | None = None,
    max_pixels: int | None = MAX_PIXELS,
    on_skip: Callable[[str], None] | None = None,
    on_result: Callable[[Path, Any], None] | None = None,
) -> FolderResults:
    """:meth:`GLIPPredictor.ask` on every file: ``answers.json`` + annotated PNGs (entity boxes, the
    answer above the image). A model without a VQA head, an empty or too long question raise before any
    image is read."""
    predictor.require("vqa")
    if not question.strip():
        from glip.text.tokenizer import PromptError

        raise PromptError("the question is empty")
    tokenize_captions([question], max_length=predictor.max_query_len, pad_to_max=False)  # length check
    return _run(
        images,
        out_dir,
        ANSWERS_FILE,
        lambda image: predictor.ask(image, question, threshold=threshold, entities=entities),
        draw_answer,
        max_pixels,
        on_skip,
        on_result,
    )


def caption_to_folder(
    predictor: GLIPPredictor,
    images: Sequence[str | Path],
    *,
    out_dir: str | Path,
    beams: int = 1,
    max_length: int = 32,
    min_score: float = 0.3,
    max_pixels: int | None = MAX_PIXELS,
    on_skip: Callable[[str], None] | None = None,
    on_result: Callable[[Path, Any], None] | None = None,
) -> FolderResults:
    """:meth:`GLIPPredictor.caption` on every file: ``captions.json`` + annotated PNGs (each grounded word's
    box scoring at least ``min_score``, the caption above the image)."""
    predictor.require("captioner")
    return _run(
        images,
        out_dir,
        CAPTIONS_FILE,
        lambda image: predictor.caption(image, beams=beams, max_length=max_length),
        lambda image, caption: draw_caption(image, caption, min_score),
        max_pixels,
        on_skip,
        on_result,
    )
