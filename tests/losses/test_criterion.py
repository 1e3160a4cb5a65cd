"""The training criterion: the values of the loss code it replaced (engine.train.compute_losses with the loss
fields of TrainConfig, pinned), one forward on the masked text, weights, fit with the default / a custom criterion, the
criterion config saved with the run, and the GLIPv2 heads it adds (also under 2-process DDP)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from glip.config import V2Config
from glip.data.toy import SquaresDataset, deterministic_tiny_random
from glip.data.types import collate
from glip.engine.train import TrainConfig, fit
from glip.losses.criterion import Criterion, CriterionConfig, CriterionConfigError
from glip.losses.grounding import LOSS_KEYS
from glip.models.glip import build_model
from tests import helpers


def _model(v2: V2Config | None = None):
    torch.manual_seed(0)
    config = deterministic_tiny_random()
    return build_model(config if v2 is None else dataclasses.replace(config, v2=v2))


def _batch():
    return collate([SquaresDataset(2, size=96)[i] for i in range(2)])


CONFIGS = [
    CriterionConfig(),
    CriterionConfig(ground_loss_weight=0.5, topk=5, reg_loss_weight=1.0),
    CriterionConfig(inter_loss_weight=0.5, mlm_loss_weight=2.0, mlm_probability=0.5),
    CriterionConfig(
        inter_loss_weight=0.3, inter_temperature=0.1, mlm_loss_weight=0.1, ground_loss_weight=2.0
    ),
]

# compute_losses at the commit before the criterion, on _model(V2Config(inter_dim=16, mlm_head=True)) and
# _batch(), torch.manual_seed(3) before each call, one intra-op thread (float32 values as float.hex)
PINNED = [
    {"loss_centerness": "0x1.62caa4p-1", "loss_giou": "0x1.3e81b0p+0", "loss_token": "0x1.258a74p+1"},
    {"loss_centerness": "0x1.6332ccp-2", "loss_giou": "0x1.3cc8f6p-2", "loss_token": "0x1.24a2c8p+0"},
    {
        "loss_centerness": "0x1.62cde0p-1",
        "loss_giou": "0x1.3e8ccep+0",
        "loss_inter": "0x1.5c0e88p+1",
        "loss_mlm": "0x1.4705f6p+4",
        "loss_token": "0x1.2620dcp+1",
    },
    {
        "loss_centerness": "0x1.62cd10p+0",
        "loss_giou": "0x1.3e87b2p+1",
        "loss_inter": "0x1.331bdcp+0",
        "loss_mlm": "0x1.058d60p+0",
        "loss_token": "0x1.25e2fap+2",
    },
]


@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_criterion_gives_the_pinned_losses(index):
    config = CONFIGS[index]
    model, batch = _model(V2Config(inter_dim=16, mlm_head=True)), _batch()
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # the pinned values were computed on one thread (reductions differ in the last bit)
    try:
        torch.manual_seed(3)
        losses = Criterion(config)(model, batch)
    finally:
        torch.set_num_threads(threads)
    assert set(losses) == set(PINNED[index])
    for key, value in losses.items():
        # the values of the loss code the criterion replaced (bit-identical when it landed), to 1e-6: their last
        # bits move with the torch version and the CPU kernels (2.293287754 recorded, 2.293287992 on torch
        # 2.14.1 / AVX2)
        assert float(value.detach()) == pytest.approx(float.fromhex(PINNED[index][key]), rel=1e-6), key


def test_weight_dict_and_heads():
    criterion = Criterion(CriterionConfig(ground_loss_weight=0.5, inter_loss_weight=0.2, mlm_loss_weight=0.1))
    assert criterion.config.heads == ("inter", "mlm")
    assert criterion.weight_dict == {
        "loss_token": 0.5,
        "loss_giou": 1.0,
        "loss_centerness": 0.5,
        "loss_inter": 0.2,
        "loss_mlm": 0.1,
    }
    assert Criterion().config == CriterionConfig() and Criterion().config.heads == ()
    assert set(Criterion().weight_dict) == set(LOSS_KEYS)


def test_config_round_trip_and_bad_values():
    config = CriterionConfig(inter_loss_weight=0.5, inter_temperature=0.05)
    assert CriterionConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(CriterionConfigError, match="unknown CriterionConfig keys"):
        CriterionConfig.from_dict({"inter_weight": 1.0})
    with pytest.raises(CriterionConfigError, match="inter_temperature must be > 0"):
        CriterionConfig(inter_temperature=0.0)
    with pytest.raises(CriterionConfigError, match="mlm_probability"):
        CriterionConfig(mlm_probability=1.5)
    with pytest.raises(ValueError, match="mlm_loss_weight must be >= 0"):
        CriterionConfig(mlm_loss_weight=-1.0)


def test_zero_weights_change_nothing():
    model = _model()
    batch = collate([SquaresDataset(2, size=96)[i] for i in range(2)])
    base = Criterion()(model, batch)
    assert set(base) == set(LOSS_KEYS)
    half = Criterion(CriterionConfig(ground_loss_weight=0.5))(model, batch)
    for key in LOSS_KEYS:
        torch.testing.assert_close(half[key], base[key] * 0.5)


class _Recorder(nn.Module):
    """Delegates to a GLIP and records the input ids it is given."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.seen: list[torch.Tensor] = []

    def forward(self, images, input_ids, attention_mask, **kwargs):  # noqa: ANN001, ANN003
        self.seen.append(input_ids.clone())
        return self.model(images, input_ids, attention_mask, **kwargs)


def test_one_forward_on_the_masked_text_gives_all_losses():
    model = _model(V2Config(inter_dim=16, mlm_head=True))
    recorder = _Recorder(model)
    batch = collate([SquaresDataset(2, size=96)[i] for i in range(2)])
    torch.manual_seed(3)
    criterion = Criterion(CriterionConfig(inter_loss_weight=0.5, mlm_loss_weight=2.0, mlm_probability=1.0))
    losses = criterion(recorder, batch)
    assert set(losses) == {*LOSS_KEYS, "loss_inter", "loss_mlm"}
    assert len(recorder.seen) == 1  # grounding, L_inter and L_mlm share one forward
    fed = recorder.seen[0]
    words = (batch.attention_mask > 0) & (batch.input_ids > 103)  # probability 1: every word is chosen
    assert bool((fed[words] != batch.input_ids[words]).float().mean() > 0.5)
    assert torch.equal(fed[~words], batch.input_ids[~words])
    assert all(bool(torch.isfinite(v)) and float(v.detach()) > 0 for v in losses.values())


@pytest.mark.parametrize("temperature", [None, 0.1])
def test_fit_adds_the_heads_and_trains_them(tmp_path, temperature):
    model = _model()
    config = TrainConfig(
        out_dir=str(tmp_path / "run"),
        max_steps=2,
        batch_size=2,
        lr=1e-3,
        progress=False,
        log_every=1,
        ckpt_every=0,
    )
    criterion = Criterion(
        CriterionConfig(inter_loss_weight=0.5, mlm_loss_weight=0.5, inter_temperature=temperature)
    )
    fit(model, SquaresDataset(4, size=96), config, criterion=criterion)
    assert sorted(model.v2_heads) == ["inter", "mlm"]
    assert model.config.v2 == V2Config(inter_dim=64, mlm_head=True)  # recorded for save / load
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_inter", "loss_mlm"} <= set(records[-1])
    log_scale = model.v2_heads["inter"].log_scale.item()
    initial = float(torch.log(torch.tensor(1 / 0.07)))
    if temperature is None:
        assert log_scale != pytest.approx(initial, abs=1e-6)  # learnt
    else:
        assert log_scale == pytest.approx(initial, abs=1e-7)  # fixed: not optimised
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert "v2_heads.mlm.dense.weight" in state["model"]


def test_fit_default_criterion_saves_its_config(tmp_path):
    model = _model()
    config = TrainConfig(
        out_dir=str(tmp_path / "run"), max_steps=1, batch_size=2, progress=False, ckpt_every=0
    )
    fit(model, SquaresDataset(2, size=96), config)
    assert json.loads((tmp_path / "run" / "criterion_config.json").read_text()) == CriterionConfig().to_dict()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["criterion_config"] == CriterionConfig().to_dict()
    assert model.v2_heads is None  # GLIP's losses only: no GLIPv2 head added


def test_fit_with_a_custom_criterion(tmp_path):
    class Scaled:
        """A custom criterion: the default losses, halved, plus a count of its calls."""

        def __init__(self) -> None:
            self.inner = Criterion(CriterionConfig(reg_loss_weight=1.0))
            self.config = self.inner.config
            self.calls = 0

        def __call__(self, model, batch):  # noqa: ANN001
            self.calls += 1
            return {f"{k}_half": v * 0.5 for k, v in self.inner(model, batch).items()}

    criterion = Scaled()
    config = TrainConfig(
        out_dir=str(tmp_path / "run"), max_steps=2, batch_size=2, progress=False, ckpt_every=0, log_every=1
    )
    fit(_model(), SquaresDataset(4, size=96), config, criterion=criterion)
    assert criterion.calls == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {f"{k}_half" for k in LOSS_KEYS} <= set(records[-1])
    assert json.loads((tmp_path / "run" / "criterion_config.json").read_text())["reg_loss_weight"] == 1.0

    # a plain function is a criterion too (no prepare, no config: nothing saved for it)
    seen = []

    def plain(model, batch):  # noqa: ANN001
        seen.append(len(batch.captions))
        return Criterion()(model, batch)

    fit(
        _model(),
        SquaresDataset(4, size=96),
        dataclasses.replace(config, out_dir=str(tmp_path / "plain")),
        criterion=plain,
    )
    assert seen == [2, 2]
    assert not (tmp_path / "plain" / "criterion_config.json").exists()


# ---------------------------------------------------------------------- DDP == one process, combined batch
DDP_SCRIPT = """
import sys, torch
from glip.data.toy import CLASSES, SquaresDataset, deterministic_tiny_random
from glip.engine.train import TrainConfig, fit
from glip.losses.criterion import Criterion, CriterionConfig
from glip.models.glip import build_model
from glip.text.phrases import phrase_id

class WithPhraseIds(SquaresDataset):
    def __getitem__(self, index):
        sample = super().__getitem__(index)
        target = sample.target
        target.phrase_ids = torch.tensor([phrase_id(CLASSES[int(label) - 1]) for label in target.labels])
        target.token_phrase_ids = torch.full((256,), -1, dtype=torch.int64)
        for row, value in zip(target.token_map, target.phrase_ids):
            target.token_phrase_ids[row > 0] = value
        return sample

torch.manual_seed(0)
model = build_model(deterministic_tiny_random())
config = TrainConfig(out_dir=sys.argv[1], max_steps=2, batch_size=int(sys.argv[2]), lr=1e-3, progress=False,
                     ckpt_every=0)
fit(model, WithPhraseIds(8, size=96), config, criterion=Criterion(CriterionConfig(inter_loss_weight=1.0)))
"""


def test_two_process_ddp_with_inter_loss_equals_one_process(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from glip.engine.checkpoint import load_checkpoint

    repo = Path(__file__).resolve().parents[2]
    script = tmp_path / "ddp_script.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single"), "4"], env=env, cwd=repo)
    assert single.returncode == 0
    torchrun = helpers.torchrun(2)
    ddp = subprocess.run([*torchrun, str(script), str(tmp_path / "ddp"), "2"], env=env, cwd=repo)
    assert ddp.returncode == 0
    one = load_checkpoint(tmp_path / "single" / "last.pt")["model"]
    two = load_checkpoint(tmp_path / "ddp" / "last.pt")["model"]
    assert "v2_heads.inter.region_proj.weight" in one
    worst = max(
        (one[k].float() - two[k].float()).abs().max().item() for k in one if one[k].is_floating_point()
    )
    assert worst < 1e-4, worst
    metrics = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 2 and metrics[-1]["loss_inter"] > 0
