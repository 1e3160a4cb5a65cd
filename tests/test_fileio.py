"""Atomic output files: never half-written, links replaced not followed, a full disk named."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from glip.fileio import atomic_open, atomic_save, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = atomic_write_text(tmp_path / "predictions.json", "[1]")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("[2, half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "[1]"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.json"]


def test_a_planted_symlink_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.json").symlink_to(victim)
    atomic_write_text(out / "predictions.json", "[]")
    assert victim.read_text() == "keep me"
    assert not (out / "predictions.json").is_symlink() and (out / "predictions.json").read_text() == "[]"


def test_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_disk_full_is_one_clear_error(tmp_path):
    def save(_handle):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="no space left on device while writing .*a.png"):
        atomic_save(tmp_path / "a.png", save)
    assert list(tmp_path.iterdir()) == []
