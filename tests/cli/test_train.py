"""`glip train` end to end on generated COCO data, and its bad-input behaviour."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glip import load_model
from glip.cli import main
from glip.data.toy import write_toy_coco


def test_train_cli_runs_saves_and_resumes(tmp_path, capsys):
    ann = write_toy_coco(tmp_path / "data", 4, size=96)
    out = tmp_path / "run"
    args = ["train", "--preset", "tiny_random", "--train-ann", str(ann)]
    args += ["--train-images", str(tmp_path / "data" / "images"), "--out", str(out)]
    args += "--max-steps 2 --batch-size 2 --set ckpt_every=1 progress=False".split()
    args += ["fpn_drop_block=0.0", "input.train_min_sizes=(96,)", "input.train_max_size=128"]
    assert main(args) == 0
    assert (out / "last.pt").exists() and (out / "metrics.jsonl").exists() and (out / "metrics.csv").exists()
    config = json.loads((out / "train_config.json").read_text())
    assert config["max_steps"] == 2 and config["ckpt_every"] == 1
    model = load_model(out / "model")
    assert model.config.fpn_drop_block == 0.0
    # resume with more steps continues from step 2
    args[args.index("--max-steps") + 1] = "3"
    assert main([*args, "--resume"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records][-1] == 3
    if importlib.util.find_spec("matplotlib") is not None:  # the curves next to metrics.jsonl
        assert "training curves (loss parts and lr against step)" in capsys.readouterr().out
        with Image.open(out / "training_curves.png") as image:
            assert image.format == "PNG" and image.width > 300


def test_training_curves_plot(tmp_path, caplog):
    """Loss parts and lr against step from a metrics.jsonl (a resumed run's repeated steps, an evaluation
    record and a bad line included)."""
    pytest.importorskip("matplotlib")
    from glip.eval.report import plot_training_curves, read_metrics_log

    lines = [
        {
            "step": s,
            "epoch": 0,
            "loss_token": 1.0 / s,
            "loss_giou": 0.5,
            "loss": 1.0 / s + 0.5,
            "lr": 1e-4 * s,
        }
        for s in (2, 4, 6, 4, 6, 8)
    ]
    log = tmp_path / "metrics.jsonl"
    text = "\n".join(json.dumps(r) for r in lines) + '\n{"step": 8, "eval/AP": 0.3}\nnot json\n'
    log.write_text(text)
    train, evals = read_metrics_log(log)
    assert [r["step"] for r in train] == [2, 4, 6, 8] and [r["step"] for r in evals] == [8]
    assert "1 line(s) skipped" in caplog.text
    path = plot_training_curves(log)
    assert path == tmp_path / "training_curves.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.height > image.width * 0.9  # three panels
        pixels = np.asarray(image.convert("RGB"))
    assert (pixels < 100).all(axis=-1).sum() > 500  # curves, axes and text are drawn
    empty = tmp_path / "empty" / "metrics.jsonl"
    empty.parent.mkdir()
    empty.write_text('{"step": 1, "eval/AP": 0.1}\n')
    assert plot_training_curves(empty) is None and not (empty.parent / "training_curves.png").exists()


def test_train_cli_bad_inputs(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    code = main(
        [
            "train",
            "--preset",
            "tiny_random",
            "--train-ann",
            str(broken),
            "--train-images",
            str(images),
            "--out",
            "x",
        ]
    )
    assert code == 2
    assert "broken.json" in capsys.readouterr().err
    missing = main(
        ["train", "--train-ann", str(tmp_path / "nope.json"), "--train-images", str(images), "--out", "x"]
    )
    assert missing == 2
    assert "not found" in capsys.readouterr().err
    ann = write_toy_coco(tmp_path / "data", 2, size=64)
    args = ["train", "--preset", "tiny_random", "--train-ann", str(ann), "--train-images", str(images)]
    code = main([*args, "--out", str(tmp_path / "r")])
    assert code == 2  # no --max-steps / --epochs ... or every image missing
    assert "error" in capsys.readouterr().err


def test_overrides_reach_the_model_and_train_configs():
    from glip.config import apply_overrides, get_preset
    from glip.engine.train import parse_train_overrides

    train, loss, model = parse_train_overrides(
        ["inter_loss_weight=0.5", "mlm_loss_weight=0.1", "inter_temperature=0.05", "v2.inter_dim=32"]
    )
    assert train == {} and loss == {
        "inter_loss_weight": 0.5,
        "mlm_loss_weight": 0.1,
        "inter_temperature": 0.05,
    }
    assert apply_overrides(get_preset("tiny_random"), model).v2.inter_dim == 32
    # the loss settings (CriterionConfig) also go by loss.KEY
    train, loss, model = parse_train_overrides(
        ["loss.inter_loss_weight=0.5", "loss.topk=5", "warmup_steps=3"]
    )
    assert train == {"warmup_steps": 3} and loss == {"inter_loss_weight": 0.5, "topk": 5} and model == {}
    with pytest.raises(ValueError, match="unknown loss setting 'inter_weight'.*inter_loss_weight"):
        parse_train_overrides(["loss.inter_weight=0.5"])


def test_train_cli_loss_settings_go_to_the_criterion(tmp_path):
    ann = write_toy_coco(tmp_path / "data", 2, size=96)
    out = tmp_path / "run"
    args = ["train", "--preset", "tiny_random", "--train-ann", str(ann)]
    args += ["--train-images", str(tmp_path / "data" / "images"), "--out", str(out), "--max-steps", "1"]
    args += ["--batch-size", "2", "--set", "ckpt_every=0", "progress=False", "loss.inter_loss_weight=0.5"]
    args += ["mlm_loss_weight=0.1", "input.train_min_sizes=(96,)", "input.train_max_size=128"]
    assert main(args) == 0
    criterion = json.loads((out / "criterion_config.json").read_text())
    assert criterion["inter_loss_weight"] == 0.5 and criterion["mlm_loss_weight"] == 0.1
    assert "inter_loss_weight" not in json.loads((out / "train_config.json").read_text())
    assert sorted(load_model(out / "model").v2_heads) == ["inter", "mlm"]


def test_train_refuses_an_existing_run_without_resume_or_overwrite(tmp_path, capsys):
    ann = write_toy_coco(tmp_path / "data", 2, size=96)
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 2}\n')
    args = ["train", "--preset", "tiny_random", "--train-ann", str(ann)]
    args += ["--train-images", str(tmp_path / "data" / "images"), "--out", str(out), "--max-steps", "1"]
    args += ["--batch-size", "2", "--set", "ckpt_every=0", "progress=False"]
    args += ["input.train_min_sizes=(96,)", "input.train_max_size=128"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds a training run (metrics.jsonl)" in err and "--overwrite" in err
    assert (out / "metrics.jsonl").read_text() == '{"step": 2}\n'  # untouched
    assert main([*args, "--overwrite"]) == 0
    assert not (out / "metrics.jsonl").read_text().startswith('{"step": 2}')  # the old log is gone


def test_verbose_after_the_subcommand(capsys):
    from glip.cli.main import build_parser

    assert build_parser().parse_args(["models", "-v"]).verbose is True
    assert build_parser().parse_args(["-v", "models"]).verbose is True
    assert build_parser().parse_args(["models"]).verbose is False


# ---------------------------------------------------------------------- --set keys, --help-config
def test_help_config_lists_the_keys_from_the_dataclasses(capsys):
    import dataclasses

    from glip.engine.train import TrainConfig
    from glip.losses.criterion import CriterionConfig

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "tiny_random", "--help-config"])  # before the required arguments
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= listed
    assert {f.name for f in dataclasses.fields(CriterionConfig)} <= listed
    assert {
        "head.num_blocks",
        "backbone.embed_dim",
        "input.train_min_sizes",
        "text.bert.hidden_size",
    } <= listed
    assert "preset 'tiny_random'" in out and "ATSS candidates per level" in out


def test_docs_training_md_holds_the_generated_key_tables():
    from glip.cli.set_keys import markdown_tables

    text = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    block = text.split("<!-- set-keys:begin -->\n", 1)[1].split("<!-- set-keys:end -->", 1)[0]
    assert block == markdown_tables(), "regenerate with glip.cli.set_keys.markdown_tables()"


@pytest.mark.parametrize(
    ("item", "suggestion"),
    [
        ("warmup_step=100", "'warmup_steps'"),
        ("head.num_block=3", "'head.num_blocks'"),
        ("loss.inter_los_weight=0.5", "'loss.inter_loss_weight'"),
        ("input.train_min_size=(320,)", "'input.train_min_sizes'"),
    ],
)
def test_a_mistyped_set_key_names_the_nearest(tmp_path, capsys, item, suggestion):
    argv = ["train", "--preset", "tiny_random", "--train-ann", str(tmp_path / "none.json")]
    argv += [
        "--train-images",
        str(tmp_path),
        "--out",
        str(tmp_path / "run"),
        "--max-steps",
        "1",
        "--set",
        item,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"did you mean {suggestion}?" in err and "--help-config" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
