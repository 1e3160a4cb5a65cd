"""``glip ask``, ``glip caption`` and the GLIPv2 side of ``glip detect`` / ``glip eval`` end to end with the
bundled GLIPv2 demo model (``demo_v2``) on generated images of the synthetic world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from glip.cli import main
from glip.weights.demo import demo_v2_model_available

pytestmark = pytest.mark.skipif(
    not demo_v2_model_available(), reason="the bundled GLIPv2 demo model is missing"
)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Six test-split images of a world seed never used in training, with instance masks."""
    from glip.data.synthetic.writers import generate

    out = tmp_path_factory.mktemp("world")
    generate(out, num_images=6, seed=11, split="test", masks=True, overwrite=True)
    return out


def test_ask_prints_answers_and_writes_answers_json(world, tmp_path, capsys):
    out = tmp_path / "answers"
    images = sorted((world / "images").glob("*.png"))[:2]
    code = main(["ask", *map(str, images), "--question", "what shape is the red object?", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 image(s) answered, 0 skipped" in printed
    records = json.loads((out / "answers.json").read_text())
    assert [Path(r["file"]).name for r in records] == [p.name for p in images]
    for record in records:
        assert record["question"] == "what shape is the red object?"
        assert isinstance(record["answer"], str) and 0 <= record["score"] <= 1
        assert f"{record['file']}: {record['answer']}" in printed
        assert {d["phrase"] for d in record["detections"]} <= {"the red object"}
        with Image.open(out / Path(record["file"]).name) as drawn:  # the answer is written above the image
            assert drawn.width == record["width"] and drawn.height > record["height"]


def test_caption_greedy_and_beams(world, tmp_path, capsys):
    image = str(sorted((world / "images").glob("*.png"))[0])
    assert main(["caption", image, "--out", str(tmp_path / "greedy")]) == 0
    assert (
        main(["caption", image, "--beams", "2", "--max-length", "12", "--out", str(tmp_path / "beam")]) == 0
    )
    printed = capsys.readouterr().out
    [greedy] = json.loads((tmp_path / "greedy" / "captions.json").read_text())
    assert greedy["caption"] and f"{image}: {greedy['caption']}" in printed
    assert all(set(w) == {"word", "box_xyxy", "score"} for w in greedy["words"])
    assert any(w["box_xyxy"] is not None for w in greedy["words"])
    [beam] = json.loads((tmp_path / "beam" / "captions.json").read_text())
    assert len(beam["words"]) <= 12


def test_bad_vl_input_is_one_message_and_exit_2(world, tmp_path, capsys):
    image = str(sorted((world / "images").glob("*.png"))[0])
    assert main(["ask", image, "--question", "  ", "--out", str(tmp_path / "a")]) == 2
    assert "question is empty" in capsys.readouterr().err
    assert main(["ask", image, "--question", "what " * 300, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("glip ask: error:") and "Traceback" not in err
    # the GLIP demo model has no VQA / captioning head
    assert main(["ask", image, "--question", "what colour is the circle?", "--model", "demo"]) == 2
    assert "no VQA head" in capsys.readouterr().err
    assert main(["caption", image, "--model", "demo", "--out", str(tmp_path / "c")]) == 2
    assert "no captioning head" in capsys.readouterr().err
    # a bad file among good ones is reported and skipped (exit 1), the others answered
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    code = main(
        ["ask", image, str(bad), "--question", "what colour is the circle?", "--out", str(tmp_path / "d")]
    )
    assert code == 1
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "bad.png" in captured.err
    assert len(json.loads((tmp_path / "d" / "answers.json").read_text())) == 1


def test_detect_masks_with_the_default_model_and_eval_of_that_file(world, tmp_path):
    pytest.importorskip("pycocotools")
    out = tmp_path / "det"
    names = "red circle,blue square,green triangle,yellow star,purple cross,orange hexagon"
    assert main(["detect", str(world / "images"), "--classes", names, "--masks", "--out", str(out)]) == 0
    records = json.loads((out / "predictions.json").read_text())
    masked = [d for r in records for d in r["detections"]]
    assert masked and all(set(d["segmentation"]) == {"size", "counts"} for d in masked)
    assert all(
        d["segmentation"]["size"] == [r["height"], r["width"]] for r in records for d in r["detections"]
    )
    # glip eval --masks scores that predictions file (mask AP next to box AP)
    scored = tmp_path / "scored"
    code = main(
        ["eval", "--task", "coco", "--predictions", str(out / "predictions.json"), "--ann",
         str(world / "detection.json"), "--masks", "--out", str(scored)]
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((scored / "metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["mask_AP"] <= 1.0 and "AP" in metrics


def test_eval_masks_from_the_bundled_model(world, tmp_path):
    pytest.importorskip("pycocotools")
    out = tmp_path / "eval"
    code = main(
        ["eval", "--task", "coco", "--model", "demo_v2", "--masks", "--ann", str(world / "detection.json"),
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["mask_AP"] > 0.2 and metrics["AP50"] > 0.5


def test_referring_segmentation_from_a_caption(world, tmp_path):
    out = tmp_path / "ref"
    grounding = json.loads((world / "grounding.json").read_text())
    image = grounding["images"][0]
    code = main(
        ["detect", str(world / "images" / image["file_name"]), "--caption", image["caption"], "--masks",
         "--threshold", "0.3", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    [record] = json.loads((out / "predictions.json").read_text())
    assert record["caption"] == image["caption"]
    assert record["detections"] and all("segmentation" in d for d in record["detections"])
