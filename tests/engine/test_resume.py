"""Resuming a training run: exact with dropout on, a clean log, changed settings refused or honoured and
said, stale temporary files removed, no planted link followed."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch

from glip.config import get_preset
from glip.data.toy import SquaresDataset
from glip.engine.checkpoint import CheckpointLoadError, load_checkpoint
from glip.engine.train import TrainConfig, fit
from glip.models.glip import build_model
from tests.helpers import one_thread  # noqa: F401  (fixture)


def _model(preset: str = "tiny_random"):
    torch.manual_seed(0)
    config = get_preset(preset)
    assert config.head.fusion_dropout > 0 and config.text.bert["hidden_dropout_prob"] > 0  # dropout ON
    return build_model(config)


def _config(out, steps: int, **fields) -> TrainConfig:
    base = dict(
        out_dir=str(out),
        max_steps=steps,
        batch_size=2,
        lr=1e-3,
        ckpt_every=2,
        log_every=1,
        progress=False,
        schedule="constant",
    )
    return TrainConfig(**{**base, **fields})


DATA = SquaresDataset(6, size=64)  # 3 batches per epoch: step 4 of 8 stops in the middle of epoch 1


def test_resume_is_bit_identical_with_dropout_on(tmp_path):
    fit(_model(), DATA, _config(tmp_path / "straight", 8))
    fit(_model(), DATA, _config(tmp_path / "stopped", 4))  # stops at step 4 (as a kill after a checkpoint)
    assert load_checkpoint(tmp_path / "stopped" / "last.pt")["step"] == 4
    torch.manual_seed(123)  # the resumed process starts from another global RNG state
    fit(_model(), DATA, _config(tmp_path / "stopped", 8), resume=True)
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert resumed["step"] == straight["step"] == 8
    differ = [k for k, v in straight["model"].items() if not torch.equal(v, resumed["model"][k])]
    assert differ == [], f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    for a, b in zip(straight["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert straight["optimizer"]["param_groups"] == resumed["optimizer"]["param_groups"]
    # the log of the resumed run: every step once, in order, the same losses as the straight run
    log = [json.loads(line) for line in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9))
    straight_log = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["loss"] for line in straight_log] == [r["loss"] for r in log]


def test_resume_truncates_the_log_to_the_checkpoint_step(tmp_path):
    """A run killed after logging steps 3 and 4 but before the checkpoint of step 4: those records go."""
    out = tmp_path / "run"
    fit(_model(), DATA, _config(out, 4, ckpt_every=2))
    state = load_checkpoint(out / "last.pt")
    state["step"], state["batch_in_epoch"], state["epoch"] = 2, 2, 0  # as if killed after step 2's save
    torch.save(state, out / "last.pt")
    with (out / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 5, "lo')  # a line cut by the kill
    fit(_model(), DATA, _config(out, 4), resume=True)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    csv_steps = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    column = csv_steps[0].index("step")
    assert [int(row[column]) for row in csv_steps[1:]] == [1, 2, 3, 4]


def test_resume_with_a_changed_lr_applies_it_and_says_so(tmp_path, caplog):
    out = tmp_path / "run"
    fit(_model(), DATA, _config(out, 2))
    with caplog.at_level(logging.WARNING, logger="glip"):
        fit(_model(), DATA, _config(out, 3, lr=5e-4), resume=True)
    assert "lr 0.001 -> 0.0005" in caplog.text
    state = load_checkpoint(out / "last.pt")
    rates = {group["lr"] for group in state["optimizer"]["param_groups"]}
    assert rates == {5e-4, 1e-3, 1e-5, 2e-5}  # lr, biases at 2x lr, text_lr, text biases; was 1e-3 / 2e-3
    assert set(state["scheduler"]["base_lrs"]) == rates
    assert json.loads((out / "train_config.json").read_text())["lr"] == 5e-4


def test_resume_with_another_architecture_or_fixed_setting_is_one_clear_error(tmp_path):
    out = tmp_path / "run"
    fit(_model(), DATA, _config(out, 1))
    other = get_preset("tiny_random")
    other = dataclasses.replace(
        other, head=dataclasses.replace(other.head, num_blocks=other.head.num_blocks + 1)
    )
    torch.manual_seed(0)
    with pytest.raises(CheckpointLoadError, match="another model .*head.num_blocks"):
        fit(build_model(other), DATA, _config(out, 2), resume=True)
    with pytest.raises(CheckpointLoadError, match="batch_size: 2 in the checkpoint, 3 now"):
        fit(_model(), DATA, _config(out, 2, batch_size=3), resume=True)


def test_cli_resume_errors_are_one_line_and_exit_code_2(tmp_path, capsys):
    from glip.cli import main
    from glip.data.toy import write_toy_coco

    ann = write_toy_coco(tmp_path / "data", 2, size=64)
    out = tmp_path / "run"
    args = ["train", "--preset", "tiny_random", "--train-ann", str(ann)]
    args += ["--train-images", str(tmp_path / "data" / "images"), "--out", str(out), "--max-steps", "1"]
    args += ["--set", "progress=False", "input.train_min_sizes=(64,)", "input.train_max_size=64"]
    assert main(args) == 0
    capsys.readouterr()
    other = [*args[:2], "tiny", *args[3:]]
    other[other.index("--set") + 1 :] = [
        "progress=False",
        "input.train_min_sizes=(64,)",
        "input.train_max_size=64",
    ]
    pytest.importorskip("timm")
    for argv, message in (
        ([*other, "--resume"], "another model"),
        ([*args, "--resume", "--batch-size", "1"], "batch_size"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    for content in (b"", b"PK\x03\x04 cut"):
        (out / "last.pt").write_bytes(content)
        assert main([*args, "--resume"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "delete it to start over" in err[0], err


def test_stale_checkpoint_temp_files_are_removed_at_start(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".last.pt.abc123.tmp", out / ".last.pt.zz9.tmp"]
    for path in stale:
        path.write_bytes(b"x" * 100)
    (out / "keep.tmp").write_text("not ours")
    fit(_model(), DATA, _config(out, 1))
    assert not any(path.exists() for path in stale)
    assert (out / "keep.tmp").exists()


def test_planted_links_in_the_run_folder_are_not_followed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    victims = {}
    for name in ("metrics.jsonl", "metrics.csv", "train_config.json", "model_config.json", "last.pt"):
        victim = tmp_path / f"victim-{name}"
        victim.write_text("keep me")
        (out / name).symlink_to(victim)
        victims[name] = victim
    fit(_model(), DATA, _config(out, 2))
    for name, victim in victims.items():
        assert victim.read_text() == "keep me", name
        assert not (out / name).is_symlink(), name
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
