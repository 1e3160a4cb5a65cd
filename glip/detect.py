"""Detect (or ground) in a list of image files and write the results to a folder.

:func:`detect_to_folder` is what ``glip detect`` and ``glip demo`` run: for every readable image it writes
an annotated PNG, and at the end ``predictions.json`` (one record per image, :meth:`Prediction.to_dict`)
and, when some files could not be read, ``errors.json``. An unreadable image is reported and skipped; a
bad prompt stops everything before any image is read or anything is written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glip.fileio import atomic_save, atomic_write_text
from glip.images import MAX_PIXELS, ImageError, load_image
from glip.visualize import draw_prediction

if TYPE_CHECKING:  # pragma: no cover
    from glip.predictor import GLIPPredictor

PREDICTIONS_FILE = "predictions.json"
ERRORS_FILE = "errors.json"


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
) -> FolderDetections:
    """Run ``predictor`` on every file of ``images`` and write annotated PNGs + ``predictions.json``.

    Give ``classes`` (detection) or ``caption`` (grounding, optionally with its ``phrases``). The prompt
    is built and checked once before any image is read (a bad prompt raises ``PromptError`` and writes
    nothing). An image that cannot be read (``ImageError``) is passed to ``on_skip`` as one line naming
    the file (default: printed to stderr), recorded in ``errors.json`` and skipped. Annotated images are
    named after the input (``a.jpg`` -> ``a.png``, clashes numbered). ``batch_size`` images go through the
    predictor together (grouped by padded size, so each gets its one-at-a-time result); ``max_pixels``:
    the decoder's limit (an image over it is reported and skipped). Every file is written atomically.
    """
    from tqdm import tqdm

    if (classes is None) == (caption is None):
        raise ValueError("give classes or a caption (exactly one)")
    if phrases and caption is None:
        raise ValueError("--phrases needs --caption")
    report = on_skip or _print_skipped
    # build (and validate) the prompt once, before touching any image
    if classes is not None:
        predictor.class_prompts(classes, chunk_size)
    else:
        predictor.caption_prompt(caption, phrases)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    used_names: set[str] = set()
    paths = [Path(p) for p in images]

    def skip(path: Path, exc: Exception) -> None:
        message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        report(message)
        errors.append({"file": str(path), "error": message})

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    bar = tqdm(total=len(paths), desc="detect", unit="img", disable=not progress or len(paths) < 2)
    for start in range(0, len(paths), batch_size):
        loaded = []
        for path in paths[start : start + batch_size]:
            try:
                loaded.append((path, load_image(path, max_pixels=max_pixels)))
            except ImageError as exc:
                skip(path, exc)

        def predict(batch: list[tuple[Path, Any]]) -> list[Any]:
            return predictor.predict(
                [image for _, image in batch],
                classes=classes,
                caption=caption,
                phrases=phrases,
                threshold=threshold,
                chunk_size=chunk_size,
                masks=masks,
                batch_size=batch_size,
                max_pixels=max_pixels,
            )

        try:
            done = list(zip(loaded, predict(loaded))) if loaded else []
        except ImageError:  # an image the model cannot take (too elongated ...): find it, keep the others
            done = []
            for item in loaded:
                try:
                    done.extend(zip([item], predict([item])))
                except ImageError as exc:
                    skip(item[0], exc)
        for (path, image), prediction in done:
            prediction.source = str(path)
            records.append(prediction.to_dict())
            name = path.stem + ".png"
            while name in used_names:
                name = f"{Path(name).stem}_{len(used_names)}.png"
            used_names.add(name)
            drawn = draw_prediction(image, prediction)
            atomic_save(out / name, lambda handle, drawn=drawn: drawn.save(handle, format="PNG"))
        bar.update(min(batch_size, len(paths) - start))
    bar.close()
    atomic_write_text(out / PREDICTIONS_FILE, json.dumps(records, indent=1))
    if errors:
        atomic_write_text(out / ERRORS_FILE, json.dumps(errors, indent=1))
    return FolderDetections(records=records, errors=errors, out_dir=out)
