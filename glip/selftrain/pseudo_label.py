"""Pseudo-labelling a caption corpus with a teacher GLIP: streaming, sharded, resumable, multi-process.

    teacher = Teacher(load_model("glip_t"), TeacherConfig(threshold=0.5))
    summary = pseudo_label(teacher, read_lines("captions.jsonl"), "images/", "pseudo.jsonl",
                           PseudoLabelConfig(shard_size=1000, batch_size=8), resume=True)

Input: JSONL lines ``{"image": path, "caption": str}`` (the caption-only format of ``docs/data.md``). ``image``
is relative to the image directory or absolute; a URL (``https://host/a/b.jpg``) is read from the local mirror
``DIR/host/a/b.jpg`` (the layout ``wget -x`` writes; nothing is downloaded). Output: ODVG grounding records
(``docs/data.md``), one per pair with at least one confident phrase, readable by ``glip train`` with
``--train-images DIR``::

    {"filename": "a.jpg", "height": 480, "width": 640,
     "grounding": {"caption": "a woman riding a bicycle",
                   "regions": [{"bbox": [[12.0, 30.5, 200.0, 410.0]], "phrase": "a woman",
                                "tokens_positive": [[0, 7]], "scores": [0.83]}, ...]},
     "source_line": 17}

How the work is cut (``PseudoLabelConfig.shard_size`` = S): shard k is input lines ``[k S, (k + 1) S)``
(0-based, blank lines included), processed by rank ``k % world_size`` into ``OUT.parts/part-{k:06d}.jsonl``
(written to a temporary file, fsynced, renamed), then its manifest ``part-{k:06d}.json`` (line range, record
count, statistics, problems) is written the same way. The manifests are the index: a shard is finished iff
its manifest exists for the same line range. ``resume=True`` skips finished shards and redoes any partial one
from its start, so a killed run ends with exactly the output of an uninterrupted one; because a shard's
content depends only on its lines, 1 process and N processes write identical shards. After every rank is
done (a barrier), rank 0 merges the shards in order into ``OUT`` and writes ``OUT.stats.json`` (counts,
unique phrases, score histogram), ``OUT.scores.png`` and, when inputs were skipped, ``OUT.errors.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from PIL import Image

from glip.fileio import atomic_open, atomic_write_text
from glip.images import ImageError
from glip.preprocess import resized_hw
from glip.selftrain.stats import PseudoLabelStats, save_score_histogram
from glip.selftrain.teacher import GroundingPrompt, Teacher, TeacherConfig
from glip.text.tokenizer import PromptError

__all__ = [
    "PseudoLabelConfig",
    "RunSummary",
    "merge_shards",
    "output_paths",
    "pseudo_label",
    "read_lines",
    "resolve_image",
    "run_shards",
]

logger = logging.getLogger(__name__)

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
#: run.json keys that must match when a run is resumed (they change what a shard contains).
_RESUME_KEYS = ("threshold", "max_phrases", "max_boxes_per_phrase", "nms_iou", "shard_size", "teacher")


@dataclass(frozen=True)
class PseudoLabelConfig:
    """Pseudo-labelling settings (the teacher's selection rules: :class:`TeacherConfig`).

    batch_size: image-caption pairs per teacher forward pass.
    shard_size: input lines per output shard (the unit of resumption and of work per rank).
    """

    threshold: float = 0.5
    max_phrases: int | None = None
    max_boxes_per_phrase: int = 10
    nms_iou: float = 0.5
    batch_size: int = 1
    shard_size: int = 1000

    def __post_init__(self) -> None:
        self.teacher_config()  # validates the selection rules
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")

    def teacher_config(self) -> TeacherConfig:
        return TeacherConfig(self.threshold, self.max_phrases, self.max_boxes_per_phrase, self.nms_iou)


@dataclass
class RunSummary:
    """What a finished run wrote: the merged JSONL, its statistics (JSON + PNG), the number of input lines
    and shards, and the statistics themselves."""

    output: Path
    stats_path: Path
    histogram_path: Path
    errors_path: Path | None
    num_lines: int
    num_shards: int
    stats: PseudoLabelStats


# ---------------------------------------------------------------------------------------------- paths


def output_paths(out: str | Path) -> dict[str, Path]:
    """Where a run with output ``out`` (``X.jsonl``) keeps its files: ``parts`` (``X.jsonl.parts/``, shards
    and manifests), ``stats`` (``X.stats.json``), ``histogram`` (``X.scores.png``), ``errors``
    (``X.errors.jsonl``)."""
    out = Path(out)
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return {
        "out": out,
        "parts": out.with_name(out.name + ".parts"),
        "stats": out.with_name(stem + ".stats.json"),
        "histogram": out.with_name(stem + ".scores.png"),
        "errors": out.with_name(stem + ".errors.jsonl"),
    }


def _shard_files(parts: Path, shard: int) -> tuple[Path, Path]:
    return parts / f"part-{shard:06d}.jsonl", parts / f"part-{shard:06d}.json"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a fsynced temporary file and a rename: all or nothing."""
    atomic_write_text(path, text)
    _fsync_dir(path.parent)


# ---------------------------------------------------------------------------------------------- input


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Stream ``(0-based line index, line)`` pairs of a text file (never loads the whole file)."""
    path = Path(path)
    if not path.is_file():  # checked now, not at the first next()
        raise FileNotFoundError(f"captions file not found: {path}")

    def stream() -> Iterator[tuple[int, str]]:
        with path.open(encoding="utf-8", errors="replace") as handle:
            yield from enumerate(handle)

    return stream()


def resolve_image(value: str, image_dir: str | Path | None) -> tuple[Path, str]:
    """``(file to read, name to write as the record's filename)`` for an input ``image`` value.

    Relative paths are under ``image_dir`` (the written name stays relative, so ``glip train
    --train-images image_dir`` finds it); absolute paths are kept; a URL maps to ``host/path`` under
    ``image_dir`` (query and fragment dropped, %-escapes decoded).
    """
    name = value
    if _URL.match(value):
        parts = urlsplit(value)
        name = (parts.netloc + "/" + unquote(parts.path).lstrip("/")).rstrip("/")
        if ".." in Path(name).parts:
            raise ValueError(f"URL {value!r} leaves the image directory")
    path = Path(name)
    if path.is_absolute() or image_dir is None:
        return path, name
    return Path(image_dir) / path, name


def _parse_pair(line: str) -> tuple[str, str]:
    """``(image, caption)`` of one JSONL line; ValueError saying what is wrong."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    image, caption = record.get("image"), record.get("caption")
    if not isinstance(image, str) or not image.strip():
        raise ValueError("missing 'image' (a path or URL)")
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"{image}: missing or empty 'caption'")
    return image, caption


def _read_stored_pixels(path: Path) -> Image.Image:
    """The image in its stored pixel grid (EXIF orientation ignored, as ``glip train`` reads ODVG images)."""
    from glip.data.reading import read_image

    return read_image(path, exif_transpose=False)


# ---------------------------------------------------------------------------------------------- records


def _region(phrase_boxes: Any, width: int, height: int) -> dict[str, Any]:
    boxes = []
    for x1, y1, x2, y2 in phrase_boxes.boxes.tolist():
        # legacy inclusive x2 -> continuous ODVG x2 (the ODVG reader subtracts 1 again)
        boxes.append(
            [
                round(min(max(x1, 0.0), width), 2),
                round(min(max(y1, 0.0), height), 2),
                round(min(max(x2 + 1.0, 0.0), width), 2),
                round(min(max(y2 + 1.0, 0.0), height), 2),
            ]
        )
    return {
        "bbox": boxes,
        "phrase": phrase_boxes.phrase,
        "tokens_positive": [[b, e] for b, e in phrase_boxes.spans],
        "scores": [round(float(s), 4) for s in phrase_boxes.scores.tolist()],
    }


@dataclass
class _Pending:
    line: int
    name: str
    image: Image.Image
    prompt: GroundingPrompt


def _label_shard(
    teacher: Teacher,
    lines: list[tuple[int, str]],
    image_dir: str | Path | None,
    batch_size: int,
    write: Any,
) -> tuple[PseudoLabelStats, list[dict[str, Any]]]:
    """Label the pairs of one shard in line order; ``write(line)`` receives each output JSONL line."""
    stats = PseudoLabelStats()
    problems: list[dict[str, Any]] = []
    input_cfg = teacher.model.config.input

    def problem(kind: str, line: int, message: str) -> None:
        setattr(stats, kind, getattr(stats, kind) + 1)
        problems.append({"line": line, "kind": kind, "error": message})
        logger.warning("input line %d skipped: %s", line + 1, message)

    def flush(pending: list[_Pending]) -> None:
        if not pending:
            return
        outputs = teacher.label([p.image for p in pending], [p.prompt for p in pending], batch_size)
        for item, output in zip(pending, outputs):
            stats.phrases += len(item.prompt.phrases)
            stats.add_candidates(output.candidate_scores)
            if not output.phrases:
                stats.no_confident_phrase += 1
                continue
            width, height = item.image.width, item.image.height
            for phrase_boxes in output.phrases:
                stats.add_kept(phrase_boxes.phrase, phrase_boxes.scores)
            record = {
                "filename": item.name,
                "height": height,
                "width": width,
                "grounding": {
                    "caption": item.prompt.caption,
                    "regions": [_region(p, width, height) for p in output.phrases],
                },
                "source_line": item.line,
            }
            write(json.dumps(record, ensure_ascii=False) + "\n")
            stats.records += 1
        pending.clear()

    pending: list[_Pending] = []
    for line, text in lines:
        if not text.strip():
            continue
        stats.pairs += 1
        try:
            value, caption = _parse_pair(text)
            path, name = resolve_image(value, image_dir)
        except ValueError as exc:
            problem("bad_records", line, str(exc))
            continue
        try:
            prompt = teacher.prompt(caption)
        except PromptError as exc:
            problem("bad_records", line, f"{value}: {exc}")
            continue
        try:
            image = _read_stored_pixels(path)
            if min(resized_hw(image.width, image.height, input_cfg.min_size, input_cfg.max_size)) < 1:
                raise ImageError(f"{path} ({image.width}x{image.height}) is too elongated to resize")
        except ImageError as exc:
            problem("bad_images", line, str(exc))
            continue
        pending.append(_Pending(line, name, image, prompt))
        if len(pending) >= batch_size:
            flush(pending)
    flush(pending)
    return stats, problems


# ---------------------------------------------------------------------------------------------- shards


def _shards(lines: Iterable[tuple[int, str]], shard_size: int, wanted: Any) -> Iterator[tuple[int, int, Any]]:
    """Group streamed lines into shards: ``(shard, end line, lines or None)``; lines are kept only for
    shards ``wanted(shard)`` says yes to. The last item is ``(-1, total lines, None)``."""
    shard, buffer, keep, count = 0, [], wanted(0), 0
    for index, text in lines:
        if index != count:
            raise ValueError(f"line indices must count up from 0: got {index} after {count - 1}")
        count += 1
        if keep:
            buffer.append((index, text))
        if count % shard_size == 0:
            yield shard, count, buffer if keep else None
            shard, buffer = shard + 1, []
            keep = wanted(shard)
    if count % shard_size:
        yield shard, count, buffer if keep else None
    yield -1, count, None


def _finished(parts: Path, shard: int, start: int, end: int) -> bool:
    manifest = _shard_files(parts, shard)[1]
    if not manifest.exists():
        return False
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return data.get("lines") == [start, end]


def _run_record(config: PseudoLabelConfig, teacher_name: str | None, captions: str | None) -> dict[str, Any]:
    record = {**dataclasses.asdict(config), "teacher": teacher_name, "captions": captions}
    if captions is not None and Path(captions).is_file():
        record["captions_file"] = input_fingerprint(captions)
    return record


def input_fingerprint(path: str | Path) -> dict[str, Any]:
    """What pins a captions file for ``--resume``: its resolved path, size and a SHA-256 of its first and
    last lines (cheap on a file of any size; a file that grew, shrank or was replaced gives another)."""
    import hashlib

    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.readline())
        handle.seek(max(0, size - (1 << 16)))
        tail = handle.read().rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
        digest.update(b"\0" + tail)
    return {"path": str(path.resolve()), "size": size, "first_last_sha256": digest.hexdigest()}


def _check_same_input(old: dict[str, Any], settings: dict[str, Any], parts: Path) -> None:
    """A resumed run reads the captions file it started with (its shards hold labels of those lines)."""
    before, now = old.get("captions_file"), settings.get("captions_file")
    if not before or not now:  # a run from an older glip, or lines not read from a file
        return
    if before["size"] != now["size"] or before["first_last_sha256"] != now["first_last_sha256"]:
        raise ValueError(
            f"cannot resume {parts}: the captions file is not the one this run started with "
            f"({before['path']}, {before['size']} bytes; now {now['path']}, {now['size']} bytes"
            f"{', other first/last lines' if before['size'] == now['size'] else ''}): resume with that file, "
            "or start a new run (another --out)"
        )
    if before["path"] != now["path"]:
        logger.info(
            "resuming with the same captions file at another path (%s, was %s)", now["path"], before["path"]
        )


def _prepare(parts: Path, settings: dict[str, Any], resume: bool) -> None:
    """Check (every rank, before anything is written) that a fresh run starts clean and a resumed one has
    the same settings."""
    run_file = parts / "run.json"
    if run_file.exists():
        if not resume:
            raise FileExistsError(
                f"{parts} holds an earlier run: pass resume=True (--resume) to continue it, or remove it"
            )
        old = json.loads(run_file.read_text(encoding="utf-8"))
        changed = [k for k in _RESUME_KEYS if old.get(k) != settings.get(k)]
        if changed:
            diffs = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise ValueError(f"cannot resume {parts} with different settings ({diffs})")
        _check_same_input(old, settings, parts)
    elif parts.exists() and any(parts.glob("part-*.json")):  # every rank decides alike
        raise FileExistsError(f"{parts} holds shards but no run.json: remove it")


def _barrier() -> None:
    from glip.engine.distributed import barrier

    barrier()


def run_shards(
    teacher: Teacher,
    lines: Iterable[tuple[int, str]],
    image_dir: str | Path | None,
    out: str | Path,
    config: PseudoLabelConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    resume: bool = False,
    teacher_name: str | None = None,
    captions: str | None = None,
) -> int:
    """This rank's share of the work (shards ``k`` with ``k % world_size == rank``, finished ones skipped
    when resuming). Returns the number of input lines. Does not merge (see :func:`merge_shards`)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world size {world_size}")
    teacher.config = config.teacher_config()  # the run's selection rules, recorded in run.json
    parts = output_paths(out)["parts"]
    settings = _run_record(config, teacher_name, captions)
    _prepare(parts, settings, resume)
    _barrier()
    if rank == 0:
        parts.mkdir(parents=True, exist_ok=True)
        for stale in [*parts.glob("*.tmp-*"), *parts.glob(".*.tmp")]:  # partial files of a killed run
            stale.unlink(missing_ok=True)  # (no rank writes yet; .NAME.*.tmp: glip.fileio's temp files)
        if not (parts / "run.json").exists():
            _atomic_write(parts / "run.json", json.dumps(settings, indent=1) + "\n")
    _barrier()
    size = config.shard_size
    total = 0
    for shard, end, shard_lines in _shards(lines, size, lambda k: k % world_size == rank):
        if shard < 0:
            total = end
            break
        if shard_lines is None:
            continue
        start = shard * size
        if resume and _finished(parts, shard, start, end):
            logger.info("shard %d (lines %d-%d) already done", shard, start, end - 1)
            continue
        _write_shard(teacher, parts, shard, start, end, shard_lines, image_dir, config.batch_size)
    return total


def _write_shard(
    teacher: Teacher,
    parts: Path,
    shard: int,
    start: int,
    end: int,
    lines: list[tuple[int, str]],
    image_dir: str | Path | None,
    batch_size: int,
) -> None:
    data_path, manifest_path = _shard_files(parts, shard)
    manifest_path.unlink(missing_ok=True)  # a stale manifest of another line range
    with atomic_open(data_path, "w", encoding="utf-8") as handle:
        stats, problems = _label_shard(teacher, lines, image_dir, batch_size, handle.write)
    _fsync_dir(parts)
    manifest = {
        "shard": shard,
        "lines": [start, end],
        "file": data_path.name,
        "records": stats.records,
        "bytes": data_path.stat().st_size,
        "stats": stats.to_dict(),
        "problems": problems,
    }
    _atomic_write(manifest_path, json.dumps(manifest) + "\n")
    logger.info(
        "shard %d (lines %d-%d): %d records, %d boxes", shard, start, end - 1, stats.records, stats.boxes
    )


def merge_shards(out: str | Path, num_lines: int, threshold: float | None = None) -> RunSummary:
    """Concatenate the finished shards of a run over ``num_lines`` input lines into ``out`` (in input order)
    and write the statistics. Raises ValueError naming missing or mismatched shards."""
    paths = output_paths(out)
    parts = paths["parts"]
    run = json.loads((parts / "run.json").read_text(encoding="utf-8"))
    size = int(run["shard_size"])
    threshold = float(run["threshold"]) if threshold is None else threshold
    num_shards = -(-num_lines // size)
    missing, manifests = [], []
    for shard in range(num_shards):
        start, end = shard * size, min((shard + 1) * size, num_lines)
        data_path, manifest_path = _shard_files(parts, shard)
        if not _finished(parts, shard, start, end) or not data_path.exists():
            missing.append(f"{shard} (lines {start}-{end - 1})")
            continue
        manifests.append(json.loads(manifest_path.read_text(encoding="utf-8")))
    if missing:
        raise ValueError(
            f"{len(missing)} of {num_shards} shards are not finished: {', '.join(missing[:10])}"
            f"{' ...' if len(missing) > 10 else ''}; rerun with --resume"
        )
    with atomic_open(paths["out"], "wb") as target:
        for manifest in manifests:
            data_path = parts / manifest["file"]
            if data_path.stat().st_size != manifest["bytes"]:
                raise ValueError(f"{data_path} has changed since it was written ({manifest['bytes']} bytes)")
            with data_path.open("rb") as source:
                while chunk := source.read(1 << 20):
                    target.write(chunk)
    stats = PseudoLabelStats.total(PseudoLabelStats.from_dict(m["stats"]) for m in manifests)
    problems = [p for m in manifests for p in m["problems"]]
    errors_path = None
    paths["errors"].unlink(missing_ok=True)
    if problems:
        errors_path = paths["errors"]
        _atomic_write(errors_path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in problems))
    summary = {
        "output": str(paths["out"]),
        "captions": run.get("captions"),
        "teacher": run.get("teacher"),
        "settings": {k: run[k] for k in _RESUME_KEYS if k in run},
        "num_lines": num_lines,
        "num_shards": num_shards,
        **stats.to_dict(with_phrases=False),
    }
    _atomic_write(paths["stats"], json.dumps(summary, indent=1) + "\n")
    save_score_histogram(stats, paths["histogram"], threshold)
    return RunSummary(
        output=paths["out"],
        stats_path=paths["stats"],
        histogram_path=paths["histogram"],
        errors_path=errors_path,
        num_lines=num_lines,
        num_shards=num_shards,
        stats=stats,
    )


def pseudo_label(
    teacher: Teacher,
    lines: Iterable[tuple[int, str]],
    image_dir: str | Path | None,
    out: str | Path,
    config: PseudoLabelConfig | None = None,
    *,
    resume: bool = False,
    rank: int = 0,
    world_size: int = 1,
    teacher_name: str | None = None,
    captions: str | None = None,
) -> RunSummary | None:
    """Pseudo-label a stream of ``(line index, JSONL line)`` pairs (:func:`read_lines`) into ``out``.

    Every rank of a ``torchrun`` job calls this with its ``rank`` / ``world_size`` (the process group, when
    initialised, provides the barrier); rank 0 merges and returns the :class:`RunSummary`, other ranks
    return None. ``teacher_name`` / ``captions`` are recorded in ``run.json`` (a resumed run must use the
    same teacher and settings).
    """
    config = config or PseudoLabelConfig()
    num_lines = run_shards(
        teacher,
        lines,
        image_dir,
        out,
        config,
        rank=rank,
        world_size=world_size,
        resume=resume,
        teacher_name=teacher_name,
        captions=captions,
    )
    _barrier()
    if rank != 0:
        return None
    return merge_shards(out, num_lines, config.threshold)
