"""GLIPv2 heads owned by the model (config, save / load, strictness) and their training integration."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from glip.config import GLIPConfig, V2Config, apply_overrides, get_preset
from glip.data.toy import SquaresDataset, deterministic_tiny_random
from glip.data.types import collate
from glip.engine.train import TrainConfig, compute_losses, fit
from glip.losses.grounding import LOSS_KEYS
from glip.models.glip import build_model
from glip.weights.loading import load_model, save_model


def _model(v2: V2Config | None = None):
    torch.manual_seed(0)
    config = deterministic_tiny_random()
    return build_model(config if v2 is None else dataclasses.replace(config, v2=v2))


def test_default_configs_have_no_v2_heads():
    model = _model()
    assert model.v2_heads is None
    assert not any(k.startswith("v2_heads") for k in model.state_dict())
    old = model.config.to_dict()
    old.pop("v2")  # a config.json written before GLIPv2
    assert GLIPConfig.from_dict(old) == model.config
    with pytest.raises(ValueError, match="no GLIPv2 'inter' head"):
        batch = collate([SquaresDataset(1, size=64)[0]])
        model(batch.images, batch.input_ids, batch.attention_mask, v2=("inter",))


def test_heads_from_config_save_and_load_strictly(tmp_path):
    model = _model(V2Config(inter_dim=16, mlm_head=True))
    assert sorted(model.v2_heads) == ["inter", "mlm"]
    assert model.v2_heads["inter"].region_proj.weight.shape == (16, 64)
    with torch.no_grad():
        model.v2_heads["inter"].log_scale.fill_(1.5)
    save_model(model, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["v2"]["inter_dim"] == 16
    loaded = load_model(tmp_path / "m")
    assert loaded.v2_heads["inter"].log_scale.item() == 1.5
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_overrides_reach_the_model_and_train_configs():
    import dataclasses

    from glip.config import parse_overrides

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    train, model = parse_overrides(
        ["inter_loss_weight=0.5", "mlm_loss_weight=0.1", "inter_temperature=0.05", "v2.inter_dim=32"],
        train_fields,
    )
    assert train == {"inter_loss_weight": 0.5, "mlm_loss_weight": 0.1, "inter_temperature": 0.05}
    assert apply_overrides(get_preset("tiny_random"), model).v2.inter_dim == 32


def test_zero_weights_change_nothing():
    model = _model()
    batch = collate([SquaresDataset(2, size=96)[i] for i in range(2)])
    base = compute_losses(model, batch, TrainConfig())
    assert set(base) == set(LOSS_KEYS)
    half = compute_losses(model, batch, TrainConfig(ground_loss_weight=0.5))
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
    losses = compute_losses(
        recorder, batch, TrainConfig(inter_loss_weight=0.5, mlm_loss_weight=2.0, mlm_probability=1.0)
    )
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
        inter_loss_weight=0.5,
        mlm_loss_weight=0.5,
        inter_temperature=temperature,
        progress=False,
        log_every=1,
        ckpt_every=0,
    )
    fit(model, SquaresDataset(4, size=96), config)
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


# ---------------------------------------------------------------------- DDP == one process, combined batch
DDP_SCRIPT = """
import sys, torch
from glip.data.toy import CLASSES, SquaresDataset, deterministic_tiny_random
from glip.engine.train import TrainConfig, fit
from glip.models.glip import build_model
from glip.v2.phrases import phrase_id

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
                     ckpt_every=0, inter_loss_weight=1.0)
fit(model, WithPhraseIds(8, size=96), config)
"""


def test_two_process_ddp_with_inter_loss_equals_one_process(tmp_path):
    import os
    import socket
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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    torchrun += ["--master-addr", "127.0.0.1", "--master-port", str(port)]
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
