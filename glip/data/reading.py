"""Reading annotation files and images, and validating the fields every format shares.

Every reader reports a problem as :class:`~glip.data.types.DataError` (annotation files) or
:class:`~glip.images.ImageError` (images) naming the file: never a deep traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from glip.data.types import DataError
from glip.images import ImageError, load_image
from glip.text.prompts import Span
from glip.text.tokenizer import get_tokenizer

__all__ = [
    "caption_problem",
    "check_spans",
    "finite_numbers",
    "id_sort_key",
    "load_json",
    "read_image",
    "iter_jsonl",
    "read_jsonl",
    "token_lengths",
]

_ORIENTATION = 0x0112


def load_json(source: str | Path | Mapping[str, Any], what: str = "annotation file") -> dict[str, Any]:
    """A JSON object from a path (or a dict, returned as is); :class:`DataError` naming the file otherwise."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            f"{path} line {line} column {column}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); "
            "annotation files must be UTF-8"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def read_image(path: str | Path, exif_transpose: bool = False) -> Image.Image:
    """RGB PIL image of a file. ``exif_transpose=False`` (official ``pil_loader``) ignores the EXIF orientation
    so that the pixels are in the frame the annotations were made in. Raises :class:`ImageError`."""
    path = Path(path)
    if exif_transpose:
        return load_image(path)
    if not path.exists():
        raise ImageError(f"image not found: {path}")
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an image")
    try:
        with Image.open(path) as opened:
            opened.load()
            exif = opened.getexif()  # cached: load_image's exif_transpose then sees no orientation
            if _ORIENTATION in exif:
                del exif[_ORIENTATION]
            return load_image(opened).copy()
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"{path} is corrupt, truncated or too large: {exc}") from None


def read_jsonl(path: str | Path, report: Any) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every well-formed line; ``report(message)`` for the others."""
    return list(iter_jsonl(path, report))


def iter_jsonl(path: str | Path, report: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream (line number, object) of the well-formed lines; ``report(message)`` names each line that is not
    UTF-8, not JSON or not a JSON object (blank lines are skipped silently)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                report(
                    f"{path} line {number}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                )
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                report(f"{path} line {number}: malformed JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(record, dict):
                report(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
                continue
            yield number, record


def finite_numbers(values: Any, count: int) -> list[float] | None:
    """``count`` finite numbers (not bools) as floats, or None."""
    if not isinstance(values, list | tuple) or len(values) != count:
        return None
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        out.append(float(value))
    return out


def check_spans(spans: Any, caption: str) -> tuple[list[Span] | None, str]:
    """(spans, "") or (None, why)."""
    if not isinstance(spans, list | tuple) or not spans:
        return None, f"tokens_positive must be a non-empty list of [beg, end] spans, got {spans!r}"
    out: list[Span] = []
    for span in spans:
        if (
            not isinstance(span, list | tuple)
            or len(span) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in span)
        ):
            return None, f"span {span!r} is not [beg, end] with integer positions"
        beg, end = int(span[0]), int(span[1])
        if beg < 0 or end > len(caption) or end <= beg:
            return (
                None,
                f"span [{beg}, {end}] lies outside the caption ({len(caption)} characters) or is empty",
            )
        out.append((beg, end))
    return out, ""


def caption_problem(caption: Any) -> str:
    """Why ``caption`` cannot be used ("" when it can)."""
    if not isinstance(caption, str):
        return f"caption must be a string, got {type(caption).__name__}"
    if not any(ch.isalnum() for ch in caption):
        return f"caption {caption!r} is empty or has no letter or digit"
    return ""


def token_lengths(captions: Sequence[str]) -> list[int]:
    """Token count of each caption (with [CLS] / [SEP], never truncated)."""
    if not captions:
        return []
    tokenizer = get_tokenizer()
    lengths: list[int] = []
    for start in range(0, len(captions), 4096):
        chunk = list(captions[start : start + 4096])
        lengths.extend(len(ids) for ids in tokenizer(chunk, truncation=False)["input_ids"])
    return lengths


def id_sort_key(value: Any) -> tuple[int, Any]:
    """Sort key of image ids: integers in order, then anything else by its string."""
    return (0, value) if isinstance(value, int) and not isinstance(value, bool) else (1, str(value))
