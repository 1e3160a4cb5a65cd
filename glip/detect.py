"""Detect (or ground) in a list of image files and URLs and write the results to a folder.

:func:`detect_to_folder` is what ``glip detect`` and ``glip demo`` run: for every readable image it writes
an annotated image (PNG or JPEG, or none), and at the end ``predictions.json`` (one record per image,
:meth:`Prediction.to_dict` plus a ``"run"`` entry: model, prompt, threshold, glip version) and, when some
inputs could not be read, ``errors.json``. An unreadable image is reported and skipped; a bad prompt stops
everything before any image is read or anything is written. :func:`expand_inputs` turns what a user types
(files, directories, quoted globs, URLs) into that list.
"""

from __future__ import annotations

import glob
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glip.fileio import atomic_save, atomic_write_text
from glip.images import IMAGE_SUFFIXES, MAX_PIXELS, ImageError, expand_image_paths
from glip.remote import is_url, load_source, url_stem
from glip.visualize import draw_prediction

if TYPE_CHECKING:  # pragma: no cover
    from glip.predictor import GLIPPredictor

PREDICTIONS_FILE = "predictions.json"
ERRORS_FILE = "errors.json"
IMAGE_FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg")}
_GLOB_CHARS = frozenset("*?[")


def expand_inputs(items: Sequence[str]) -> list[str | Path]:
    """What ``glip detect IMAGES...`` takes -> the images to read, in order.

    A directory gives its image files (sorted); a pattern with ``*``, ``?`` or ``[`` that is not an
    existing file (a quoted glob, ``'photos/*.jpg'``, ``**`` recursive) gives the image files it matches
    (sorted; ``ValueError`` when none); an ``http(s)://`` URL stays a URL; anything else is a file path
    (a missing one is reported when it is read).
    """
    found: list[str | Path] = []
    for item in items:
        if is_url(item):
            found.append(item)
        elif _GLOB_CHARS & set(item) and not Path(item).exists():
            matches = sorted(glob.glob(item, recursive=True))
            files = [
                Path(m) for m in matches if Path(m).is_file() and Path(m).suffix.lower() in IMAGE_SUFFIXES
            ]
            for match in matches:
                if Path(match).is_dir():
                    files.extend(expand_image_paths([match]))
            if not files:
                raise ValueError(f"no image files match {item!r}")
            found.extend(files)
        else:
            found.extend(expand_image_paths([item]))
    return found


def run_info(
    *,
    model: str | None,
    classes: Sequence[str] | None,
    caption: str | None,
    phrases: Sequence[str] | None,
    threshold: float,
    chunk_size: int | None,
) -> dict[str, Any]:
    """The ``"run"`` entry of every ``predictions.json`` record: what produced it."""
    from glip.version import __version__

    prompt: dict[str, Any] = (
        {"classes": list(classes)} if classes is not None else {"caption": caption, "phrases": phrases}
    )
    return {
        "model": model,
        "prompt": prompt,
        "threshold": threshold,
        "chunk_size": chunk_size,
        "glip_version": __version__,
    }


@dataclass(frozen=True)
class FolderDetections:
    """What :func:`detect_to_folder` wrote: ``records`` (one dict per image processed), ``errors``
    (``{"file", "error"}`` per skipped file) and the folder ``out_dir``."""

    records: list[dict[str, Any]]
    errors: list[dict[str, str]]
    out_dir: Path


def _print_skipped(message: str) -> None:
    from tqdm import tqdm

    # written, not logged: the message must reach stderr whatever logging is configured
    tqdm.write(f"skipped: {message}", file=sys.stderr)


def detect_to_folder(
    predictor: GLIPPredictor,
    images: Sequence[str | Path],
    *,
    out_dir: str | Path,
    classes: Sequence[str] | None = None,
    caption: str | None = None,
    phrases: Sequence[str] | None = None,
    threshold: float = 0.5,
    chunk_size: int | None = None,
    masks: bool = False,
    batch_size: int = 1,
    max_pixels: int | None = MAX_PIXELS,
    on_skip: Callable[[str], None] | None = None,
    progress: bool = True,
    model_name: str | None = None,
    write_images: bool = True,
    image_format: str = "png",
    on_image: Callable[[dict[str, Any], int, int], None] | None = None,
) -> FolderDetections:
    """Run ``predictor`` on every file or URL of ``images`` and write annotated images + ``predictions.json``.

    Give ``classes`` (detection) or ``caption`` (grounding, optionally with its ``phrases``). The prompt
    is built and checked once before any image is read (a bad prompt raises ``PromptError`` and writes
    nothing). An image that cannot be read (``ImageError``: missing, corrupt, over ``max_pixels``, a URL
    that cannot be fetched) is passed to ``on_skip`` as one line naming it (default: printed to stderr),
    recorded in ``errors.json`` and skipped. ``batch_size`` images go through the predictor together
    (grouped by padded size, so each gets its one-at-a-time result). Every file is written atomically.

    Args:
        model_name: recorded in each record's ``"run"`` entry (with the prompt, threshold and glip version).
        write_images: write an annotated image per input (named after it: ``a.jpg`` -> ``a.png``, clashes
            numbered); False: ``predictions.json`` only.
        image_format: ``"png"`` or ``"jpg"`` (JPEG, quality 90) for the annotated images.
        on_image: called with ``(record, index, total)`` after each image (``index`` counts from 1 over
            the inputs): ``glip detect`` prints one line per image from it.
    """
    from tqdm import tqdm

    if (classes is None) == (caption is None):
        raise ValueError("give classes or a caption (exactly one)")
    if phrases and caption is None:
        raise ValueError("--phrases needs --caption")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    report = on_skip or _print_skipped
    # build (and validate) the prompt once, before touching any image
    if classes is not None:
        predictor.class_prompts(classes, chunk_size)
    else:
        predictor.caption_prompt(caption, phrases)
    run = run_info(
        model=model_name,
        classes=classes,
        caption=caption,
        phrases=phrases,
        threshold=threshold,
        chunk_size=chunk_size,
    )
    pil_format, suffix = IMAGE_FORMATS[image_format]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    used_names: set[str] = set()
    sources: list[str | Path] = [p if is_url(p) else Path(p) for p in images]
    total = len(sources)

    def skip(source: str | Path, exc: Exception) -> None:
        message = str(exc) if str(source) in str(exc) else f"{source}: {exc}"
        report(message)
        errors.append({"file": str(source), "error": message})

    def predict(batch: list[tuple[int, str | Path, Any]]) -> list[Any]:
        return predictor.predict(
            [image for _, _, image in batch],
            classes=classes,
            caption=caption,
            phrases=phrases,
            threshold=threshold,
            chunk_size=chunk_size,
            masks=masks,
            batch_size=batch_size,
            max_pixels=max_pixels,
        )

    bar = tqdm(total=total, desc="detect", unit="img", disable=not progress or total < 2)
    for start in range(0, total, batch_size):
        loaded = []
        for index, source in enumerate(sources[start : start + batch_size], start + 1):
            try:
                loaded.append((index, source, load_source(source, max_pixels=max_pixels)))
            except ImageError as exc:
                skip(source, exc)
        try:
            done = list(zip(loaded, predict(loaded))) if loaded else []
        except ImageError:  # an image the model cannot take (too elongated ...): find it, keep the others
            done = []
            for item in loaded:
                try:
                    done.extend(zip([item], predict([item])))
                except ImageError as exc:
                    skip(item[1], exc)
        for (index, source, image), prediction in done:
            prediction.source = str(source)
            record = {**prediction.to_dict(), "run": run}
            records.append(record)
            if write_images:
                stem = url_stem(str(source)) if is_url(source) else Path(source).stem
                name = stem + suffix
                while name in used_names:
                    name = f"{stem}_{len(used_names)}{suffix}"
                used_names.add(name)
                drawn = draw_prediction(image, prediction)
                atomic_save(
                    out / name,
                    lambda handle, drawn=drawn: drawn.save(handle, format=pil_format, quality=90),
                )
            if on_image is not None:
                on_image(record, index, total)
        bar.update(min(batch_size, total - start))
    bar.close()
    atomic_write_text(out / PREDICTIONS_FILE, json.dumps(records, indent=1))
    if errors:
        atomic_write_text(out / ERRORS_FILE, json.dumps(errors, indent=1))
    return FolderDetections(records=records, errors=errors, out_dir=out)
