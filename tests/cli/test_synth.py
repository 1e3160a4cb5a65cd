"""``glip synth`` (glip/cli/synth.py): parsing, exit codes."""

from __future__ import annotations

import argparse

from PIL import Image

from glip.cli.synth import add_parser as add_synth_parser
from glip.cli.synth import run as run_synth


def test_cli(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="glip")
    sub = parser.add_subparsers(dest="command")
    synth = add_synth_parser(sub)
    assert "examples:" in synth.epilog
    assert synth.formatter_class is argparse.RawDescriptionHelpFormatter
    out = tmp_path / "cli"
    args = parser.parse_args(["synth", "--out", str(out), "--num-images", "2", "--seed", "1", "--size", "96"])
    assert run_synth(args) == 0
    assert "wrote 2 train images" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "images").iterdir()) == ["train_000000.png", "train_000001.png"]
    assert Image.open(out / "images" / "train_000000.png").size == (96, 96)
    assert run_synth(args) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
    args = parser.parse_args(
        ["synth", "--out", str(out), "--num-images", "1", "--overwrite", "--split", "task_A"]
    )
    assert run_synth(args) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["task_A_000000.png"]
    assert not (out / "detection_all.json").exists()
    args = parser.parse_args(["synth", "--out", str(tmp_path / "bad"), "--num-images", "0"])
    assert run_synth(args) == 2
