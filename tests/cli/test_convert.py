"""``glip convert``: an official checkpoint -> our directory, and a bad file -> exit code 2."""

from __future__ import annotations

import torch

import glip
from glip.cli import main
from tests.helpers import make_image


def test_convert_official_checkpoint(tmp_path, capsys):
    from glip.weights.convert import to_official

    torch.manual_seed(0)
    model = glip.build_model(glip.get_preset("tiny_random"))
    checkpoint = tmp_path / "tiny_random.pth"
    torch.save({"model": to_official(model)}, checkpoint)
    out = tmp_path / "converted"
    assert main(["convert", str(checkpoint), "--config", "tiny_random", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    loaded = glip.load_model(out)
    assert loaded.config.name == "tiny_random"
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    # a detect run on the converted directory works too
    make_image(60, 80, 0).save(tmp_path / "x.png")
    argv = [
        "detect",
        str(tmp_path / "x.png"),
        "--classes",
        "cat",
        "--model",
        str(out),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 0


def test_convert_bad_checkpoint_exits_2(tmp_path, capsys):
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    assert (
        main(["convert", str(tmp_path / "bad.pth"), "--config", "tiny_random", "--out", str(tmp_path)]) == 2
    )
    captured = capsys.readouterr()
    assert "bad.pth" in captured.err and "Traceback" not in captured.err
