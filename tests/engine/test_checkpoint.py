"""Training checkpoints are read without running code: tensors and plain data only."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch

from glip.engine.checkpoint import (
    CheckpointLoadError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class _Planted:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "last.pt"
    with open(path, "wb") as handle:
        pickle.dump({"step": 3, "evil": _Planted(str(marker))}, handle)
    with pytest.raises(CheckpointLoadError, match="trust-pickle"):
        load_checkpoint(path)
    assert not marker.exists()


def test_rng_states_round_trip_through_weights_only(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # a cached gaussian in numpy's state
    state = rng_state()
    path = save_checkpoint(tmp_path / "last.pt", {"rng": state, "step": 7, "config": {"lr": 1e-4}})
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    loaded = load_checkpoint(path)  # weights_only=True
    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


def test_old_numpy_tuple_state_still_restores():
    np.random.seed(5)
    old = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": list(random.getstate())}
    expected = np.random.rand(2)
    set_rng_state(old)
    assert np.array_equal(np.random.rand(2), expected)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated"])
def test_empty_or_truncated_checkpoint_is_one_clear_error(tmp_path, content):
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointLoadError, match="delete it to start over"):
        load_checkpoint(path)


def test_checkpoints_respect_the_umask_and_leave_no_temp_file(tmp_path):
    import stat

    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "last.pt", {"step": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
