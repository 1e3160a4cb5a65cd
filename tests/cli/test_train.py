"""`glip train` end to end on generated COCO data, and its bad-input behaviour."""

from __future__ import annotations

import json

from glip import load_model
from glip.cli import main
from glip.data.toy import write_toy_coco


def test_train_cli_runs_saves_and_resumes(tmp_path, capsys):
    ann = write_toy_coco(tmp_path / "data", 4, size=96)
    out = tmp_path / "run"
    args = [
        "train",
        "--preset",
        "tiny_random",
        "--train-ann",
        str(ann),
        "--train-images",
        str(tmp_path / "data" / "images"),
    ]
    args += [
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--set",
        "ckpt_every=1",
        "progress=False",
    ]
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
    code = main(
        [
            "train",
            "--preset",
            "tiny_random",
            "--train-ann",
            str(ann),
            "--train-images",
            str(images),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2  # no --max-steps / --epochs ... or every image missing
    assert "error" in capsys.readouterr().err
