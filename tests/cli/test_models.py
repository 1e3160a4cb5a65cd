"""``glip models``: released checkpoints and presets."""

from __future__ import annotations

from glip.cli import main


def test_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("glip_t", "glip_l", "tiny", "tiny_random"):
        assert name in out
