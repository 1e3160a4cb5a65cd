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


def test_a_full_disk_while_saving_a_checkpoint_or_a_model_is_named(tmp_path, monkeypatch):
    """torch.save says "basic_ios::clear: iostream error", safetensors raises a SafetensorError: both become
    one OSError naming the file, and the previous file stays."""
    import safetensors.torch
    import torch

    from glip.config import get_preset
    from glip.engine.checkpoint import save_checkpoint
    from glip.models.glip import build_model
    from glip.weights.loading import save_model

    path = save_checkpoint(tmp_path / "last.pt", {"step": 1})
    before = path.read_bytes()

    def full_torch(_obj, _file, *args, **kwargs):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:603] . unexpected pos; basic_ios::clear: iostream error"
        )

    monkeypatch.setattr(torch, "save", full_torch)
    with pytest.raises(OSError, match="no space left on device"):
        save_checkpoint(path, {"step": 2})
    assert path.read_bytes() == before

    from safetensors import SafetensorError

    def full_safetensors(*_args, **_kwargs):
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    monkeypatch.setattr(safetensors.torch, "save_file", full_safetensors)
    with pytest.raises(OSError, match=r"no space left on device while writing .*model\.safetensors"):
        save_model(build_model(get_preset("tiny_random")), tmp_path / "model")
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "last.pt"]


def test_open_append_replaces_a_planted_link(tmp_path):
    from glip.fileio import open_append

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "log.jsonl").symlink_to(victim)
    with open_append(tmp_path / "log.jsonl") as handle:
        handle.write("1\n")
    with open_append(tmp_path / "log.jsonl") as handle:
        handle.write("2\n")
    assert victim.read_text() == "keep me" and (tmp_path / "log.jsonl").read_text() == "1\n2\n"


def test_stale_temp_files_of_one_name_are_removed(tmp_path):
    from glip.fileio import remove_stale_temp_files

    for name in (".last.pt.x1.tmp", ".last.pt.x2.tmp", ".other.json.x3.tmp", "last.pt"):
        (tmp_path / name).write_text("x")
    removed = remove_stale_temp_files(tmp_path, "last.pt")
    assert sorted(p.name for p in removed) == [".last.pt.x1.tmp", ".last.pt.x2.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.x3.tmp", "last.pt"]


def test_detect_to_folder_replaces_planted_links(tmp_path):
    """glip detect's outputs (predictions.json, the drawn PNGs) go through the same helpers."""
    from PIL import Image

    from glip.detect import detect_to_folder

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 48), (120, 30, 30)).save(images / "a.jpg")
    out = tmp_path / "out"
    out.mkdir()
    victims = []
    for name in ("predictions.json", "a.png"):
        victim = tmp_path / f"victim-{name}"
        victim.write_text("keep me")
        (out / name).symlink_to(victim)
        victims.append(victim)

    from glip.config import get_preset
    from glip.models.glip import build_model
    from glip.predictor import GLIPPredictor

    predictor = GLIPPredictor(build_model(get_preset("tiny_random")))
    detect_to_folder(predictor, [images / "a.jpg"], out_dir=out, classes=["red square"], progress=False)
    assert all(v.read_text() == "keep me" for v in victims)
    assert not (out / "predictions.json").is_symlink() and not (out / "a.png").is_symlink()


def test_detect_to_folder_on_a_full_disk_names_it_and_leaves_no_cut_file(tmp_path, monkeypatch):
    from PIL import Image

    import glip.fileio
    from glip.config import get_preset
    from glip.detect import detect_to_folder
    from glip.models.glip import build_model
    from glip.predictor import GLIPPredictor

    Image.new("RGB", (64, 48), (120, 30, 30)).save(tmp_path / "a.jpg")

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(glip.fileio.os, "fsync", full)
    predictor = GLIPPredictor(build_model(get_preset("tiny_random")))
    with pytest.raises(OSError, match=r"no space left on device while writing .*a\.png"):
        detect_to_folder(
            predictor, [tmp_path / "a.jpg"], out_dir=tmp_path / "out", classes=["x"], progress=False
        )
    assert list((tmp_path / "out").iterdir()) == []
