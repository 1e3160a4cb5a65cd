"""Writing output files atomically: a temporary file in the same folder, fsync, then ``os.replace``.

A run killed (or a disk that fills up) while writing leaves either the previous file or none at the target
path, never a half-written one; a symlink planted at the target is replaced, not followed. A full disk is
one clear ``OSError`` ("no space left on device while writing PATH").
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[tuple[int, str]]:
    """``(fd, tmp)`` of a new file in ``path``'s folder; moved over ``path`` (the umask's permissions, not
    ``mkstemp``'s 0600) when the block finishes, removed when it fails. The block writes and fsyncs it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        yield fd, tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path}") from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """``with atomic_open(path) as f: f.write(...)``: the file appears at ``path`` only when the block
    finishes without an error (``mode``: ``"w"`` or ``"wb"``)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    with _temporary_beside(Path(path)) as (fd, _), os.fdopen(fd, mode, **kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return Path(path)


def atomic_save(path: str | Path, save: Callable[[IO[bytes]], None]) -> Path:
    """Call ``save(binary_file)`` (e.g. ``lambda f: image.save(f, format="PNG")``) and put the result at
    ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        save(handle)
    return Path(path)


def atomic_write_path(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` (for writers that take a path: ``torch.save``, safetensors' ``save_file``)
    and put the result at ``path`` atomically, with the umask's permissions (``mkstemp`` alone gives 0600)."""
    path = Path(path)
    try:
        with _temporary_beside(path) as (fd, tmp):
            os.close(fd)
            write(Path(tmp))
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
    except OSError:
        raise  # a full disk is already named by _temporary_beside
    except Exception as exc:  # torch.save: "basic_ios::clear: iostream error"; safetensors: SafetensorError
        text = str(exc)
        if "No space left" in text or "StorageFull" in text:
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path}") from None
        if "iostream error" in text:
            raise OSError(errno.ENOSPC, f"could not write {path} (no space left on device?): {exc}") from None
        raise
    return path


def open_append(path: str | Path, mode: str = "a", **kwargs: Any) -> IO[Any]:
    """Open a log file (``metrics.jsonl``, an evaluation cache) for appending without following a link:
    a symlink planted at ``path`` is removed and a new regular file is started in its place (``O_NOFOLLOW``
    also refuses a link planted between the check and the open). ``mode``: ``"a"`` or ``"ab"``."""
    if mode not in ("a", "ab"):
        raise ValueError(f"open_append appends: mode 'a' or 'ab', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o666)
    return os.fdopen(fd, mode, **kwargs)


def remove_stale_temp_files(directory: str | Path, name: str) -> list[Path]:
    """Delete the temporary files that a killed :func:`atomic_open` / :func:`atomic_write_path` of
    ``directory/name`` left behind (``.NAME.*.tmp``); returns what was removed. Call it when a run starts,
    before anything of its own is being written there."""
    removed = []
    for tmp in Path(directory).glob(f".{name}.*.tmp"):
        if tmp.is_file() or tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
