"""The ``glip`` parser and dispatch: examples in every help, --version, torch-free help and ``models``,
library errors -> one line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import glip
from glip.cli import EXAMPLES, main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"glip {command}" in out


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"glip {version('glip')}" == f"glip {glip.__version__}"


def _modules_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (this checkout first on the path); the modules it imported."""
    script = code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return {"modules": set(json.loads(run.stdout.strip().splitlines()[-1])), "stdout": run.stdout}


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["detect", "--help"], ["train", "--help"], ["eval", "--help"], ["pseudo-label", "--help"]],
)
def test_help_imports_no_torch(argv):
    code = f"from glip.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    result = _modules_after(code)
    assert "usage: glip" in result["stdout"]
    assert "torch" not in result["modules"]


def test_models_and_import_glip_import_no_torch():
    result = _modules_after("import glip\nfrom glip.cli import main\nassert main(['models']) == 0")
    assert "glip_t" in result["stdout"] and "tiny_random" in result["stdout"]
    assert "torch" not in result["modules"] and "transformers" not in result["modules"]


def test_lazy_public_names():
    assert glip.get_preset("tiny_random").name == "tiny_random"
    assert set(glip.__all__) <= set(dir(glip))
    from glip.weights.resolve import resolve_model

    assert glip.resolve_model is resolve_model
    with pytest.raises(AttributeError, match="no_such_name"):
        glip.no_such_name  # noqa: B018


def test_a_bug_is_not_swallowed(monkeypatch):
    """Only input errors become one line; anything else (a bug) keeps its traceback."""
    import glip.cli.models as models

    def broken(_args):
        raise KeyError("bug")

    monkeypatch.setattr(models, "run", broken)
    with pytest.raises(KeyError):
        main(["models"])


@pytest.mark.parametrize("command", ["detect", "demo", "train", "eval", "pseudo-label"])
def test_device_defaults_to_auto_and_a_bad_one_exits_2(command, tmp_path, capsys):
    from glip.cli.main import build_parser

    ann = tmp_path / "ann.json"
    ann.write_text("{}")
    argv = {
        "detect": ["detect", str(ann), "--classes", "cat", "--out", str(tmp_path / "o")],
        "demo": ["demo", "--out", str(tmp_path / "o")],
        "train": ["train", "--train-ann", str(ann), "--train-images", str(tmp_path), "--out", str(tmp_path)],
        "eval": ["eval", "--task", "coco", "--model", "random:tiny_random", "--ann", str(ann)],
        "pseudo-label": [
            "pseudo-label",
            "--teacher",
            "x",
            "--captions",
            str(ann),
            "--out",
            str(tmp_path / "p"),
        ],
    }[command]
    assert build_parser().parse_args(argv).device == "auto"
    assert main([*argv, "--device", "tpu0"]) == 2
    err = capsys.readouterr().err
    assert f"glip {command}: error: unknown device 'tpu0'" in err and "Traceback" not in err


def test_export_is_a_command_with_examples(capsys):
    from glip.cli.main import build_parser

    args = build_parser().parse_args(["export", "--model", "random:tiny_random", "--out", "x"])
    assert (args.format, tuple(args.image_size), args.num_tokens) == ("onnx", (320, 320), 16)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--out", "x", "--format", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


def _subparsers():
    import argparse

    from glip.cli.main import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return parser, sub.choices


@pytest.mark.parametrize("command", sorted(_subparsers()[1]))
def test_every_option_has_help_text(command):
    import argparse

    parser = _subparsers()[1][command]
    missing = [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if not action.help or action.help == argparse.SUPPRESS or not action.help.strip()
    ]
    assert not missing, f"glip {command}: options without help text: {missing}"


def test_the_top_level_options_have_help_text():
    import argparse

    parser, _ = _subparsers()
    assert all(
        a.help and a.help.strip() for a in parser._actions if not isinstance(a, argparse._SubParsersAction)
    )
