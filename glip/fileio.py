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
    except RuntimeError as exc:  # torch.save reports a full disk as "basic_ios::clear: iostream error"
        if "iostream error" in str(exc) or "No space left" in str(exc):
            raise OSError(errno.ENOSPC, f"could not write {path} (no space left on device?): {exc}") from None
        raise
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
