"""``glip pseudo-label`` as users run it: killed with SIGKILL and resumed, and under 2-process torchrun; both
must write exactly the output of one uninterrupted process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glip.cli import main
from glip.selftrain.pseudo_label import output_paths
from tests import helpers

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def long_corpus(corpus, tmp_path_factory) -> Path:
    """12 pairs (the 6 scenes twice, with the captions of the second pass lower-cased)."""
    lines = [json.loads(line) for line in (corpus / "captions.jsonl").read_text().splitlines()]
    lines += [{**r, "caption": r["caption"].upper()} for r in lines]
    path = tmp_path_factory.mktemp("long") / "captions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def _command(teacher: Path, captions: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return [
        "pseudo-label",
        "--teacher",
        str(teacher),
        "--captions",
        str(captions),
        "--images",
        str(images),
        "--out",
        str(out),
        "--threshold",
        "0.5",
        "--shard-size",
        "2",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        *extra,
    ]


@pytest.fixture(scope="module")
def straight(random_teacher_dir, long_corpus, corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "pseudo.jsonl"
    assert main(_command(random_teacher_dir, long_corpus, corpus / "images", out)) == 0  # in this process
    return out


def _stats_without_paths(out: Path) -> dict:
    stats = json.loads(output_paths(out)["stats"].read_text())
    stats.pop("output")
    return stats


def _check_same(out: Path, reference: Path, num_lines: int) -> None:
    assert out.read_bytes() == reference.read_bytes()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    lines = [r["source_line"] for r in records]
    assert len(lines) == len(set(lines)) and lines == sorted(lines)  # no duplicate, input order
    stats = _stats_without_paths(out)
    assert stats == _stats_without_paths(reference)
    assert stats["pairs"] == num_lines  # no gap: every input line was processed exactly once
    assert stats["records"] == len(records) > 0


def test_killed_run_resumes_to_the_uninterrupted_output(
    random_teacher_dir, long_corpus, corpus, straight, tmp_path
):
    out = tmp_path / "pseudo.jsonl"
    args = _command(random_teacher_dir, long_corpus, corpus / "images", out)
    process = subprocess.Popen([sys.executable, "-m", "glip.cli", *args], env=ENV, cwd=REPO)
    parts = output_paths(out)["parts"]
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if (parts / "part-000001.json").exists():  # two shards finished, four to go
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not out.exists()
    finished = sorted(p.name for p in parts.glob("part-*.json"))
    assert 2 <= len(finished) < 6, finished
    assert main([*args, "--resume"]) == 0  # resumed in this process
    _check_same(out, straight, 12)
    assert not list(parts.glob("*.tmp-*"))  # the partial shard's temporary file was replaced


def test_two_torchrun_processes_write_the_one_process_output(
    random_teacher_dir, long_corpus, corpus, straight, tmp_path
):
    out = tmp_path / "pseudo.jsonl"
    torchrun = helpers.torchrun(2)
    args = _command(random_teacher_dir, long_corpus, corpus / "images", out)
    done = subprocess.run(
        [*torchrun, "-m", "glip.cli", *args], env=ENV, cwd=REPO, timeout=600, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((output_paths(out)["parts"] / "run.json").read_text())
    assert run["shard_size"] == 2
    _check_same(out, straight, 12)
    # and the shards were shared: both ranks wrote (checked through the merged, identical output above)
    assert "12 pairs" in done.stdout


def test_score_pseudo_prints_json(tmp_path, capsys):
    """``glip score-pseudo`` (was ``python -m glip.selftrain.scoring``)."""
    from tests.selftrain.test_scoring import TRUTH, _record

    pseudo, truth = tmp_path / "p.jsonl", tmp_path / "gt.json"
    circle = {"bbox": [[10, 10, 30, 30]], "tokens_positive": [[0, 12]], "scores": [0.9]}
    pseudo.write_text(json.dumps(_record([circle])) + "\n")
    truth.write_text(json.dumps(TRUTH))
    assert main(["score-pseudo", str(pseudo), str(truth), "--thresholds", "0.95"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows["written"]["matched"] == 1 and rows["> 0.95"]["pseudo_boxes"] == 0
