"""The evaluation's output files are written atomically: a planted link is replaced, not followed; a full
disk is named and leaves no half-written report file."""

from __future__ import annotations

import errno
import json

import pytest

from glip.eval import EvalOptions, evaluate_coco
from glip.eval.inference import CACHE_NAME

pytest.importorskip("pycocotools")

OUTPUTS = ("metrics.json", "summary.md", "predictions.coco.json", CACHE_NAME, "examples.png")


def test_links_planted_in_the_report_folder_are_not_followed(tmp_path, coco_set, tiny_random_model):
    ann, images = coco_set
    out = tmp_path / "out"
    out.mkdir()
    victims = {}
    for name in OUTPUTS:
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_text("keep me")
        (out / name).symlink_to(victims[name])
    evaluate_coco(tiny_random_model, ann, images, EvalOptions(out_dir=out, progress=False, max_images=2))
    for name, victim in victims.items():
        assert victim.read_text() == "keep me", name
        assert (out / name).is_file() and not (out / name).is_symlink(), name
    assert json.loads((out / "metrics.json").read_text())["metrics"]


def test_a_full_disk_is_named_and_leaves_no_half_written_file(
    tmp_path, coco_set, tiny_random_model, monkeypatch
):
    import glip.fileio

    ann, images = coco_set
    out = tmp_path / "out"
    options = EvalOptions(out_dir=out, progress=False, max_images=2)
    evaluate_coco(tiny_random_model, ann, images, options)
    before = {name: (out / name).read_bytes() for name in ("metrics.json", "predictions.coco.json")}

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(glip.fileio.os, "fsync", full)
    with pytest.raises(OSError, match="no space left on device while writing"):
        evaluate_coco(tiny_random_model, ann, images, options)
    for name, content in before.items():
        assert (out / name).read_bytes() == content, name  # the previous complete file, not a cut one
    assert not list(out.glob(".*.tmp"))
