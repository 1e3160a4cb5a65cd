"""One image decoder everywhere: an EXIF-rotated JPEG, an RGBA PNG and a BGR array give the same boxes through
``GLIPPredictor.predict``, ``glip detect`` and the COCO evaluation (``glip eval``'s library function)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glip.cli import main
from glip.predictor import GLIPPredictor
from glip.weights import resolve_model
from tests.helpers import make_image, one_thread  # noqa: F401  (fixture)

THRESHOLD = 0.3
CLASSES = ["red circle", "blue square"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """images/ with rot.jpg (EXIF orientation 6), alpha.png (RGBA) and plain.png; the upright RGB pixels each
    must decode to, computed by hand."""
    folder = tmp_path_factory.mktemp("frames") / "images"
    folder.mkdir()
    expected: dict[str, np.ndarray] = {}
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    make_image(120, 160, 0).save(folder / "rot.jpg", exif=exif, quality=95)
    with Image.open(folder / "rot.jpg") as raw:
        expected["rot.jpg"] = np.asarray(raw.convert("RGB").transpose(Image.Transpose.ROTATE_270))
    rgba = make_image(130, 110, 1).convert("RGBA")
    alpha = np.full((130, 110), 255, np.uint8)
    alpha[:, :40] = 90  # a half-transparent band: composited on white
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(folder / "alpha.png")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    expected["alpha.png"] = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    plain = make_image(100, 140, 2)
    plain.save(folder / "plain.png")
    expected["plain.png"] = np.asarray(plain)
    return folder, expected


@pytest.fixture(scope="module")
def predictor() -> GLIPPredictor:
    return GLIPPredictor(resolve_model("random:tiny_random", None, "cpu"))


def boxes_of(prediction) -> list[list[float]]:
    return [[round(v, 2) for v in box] for box in prediction.boxes.tolist()]


def test_predict_decodes_files_and_bgr_arrays_upright(dataset, predictor):
    folder, expected = dataset
    for name, pixels in expected.items():
        from_file = predictor.predict(str(folder / name), classes=CLASSES, threshold=THRESHOLD)
        from_pixels = predictor.predict(pixels, classes=CLASSES, threshold=THRESHOLD)
        assert len(from_file) > 0, name
        assert from_file.image_size == (pixels.shape[1], pixels.shape[0])
        assert torch.equal(from_file.boxes, from_pixels.boxes) and torch.equal(
            from_file.scores, from_pixels.scores
        )
        bgr = np.ascontiguousarray(pixels[:, :, ::-1])
        from_bgr = predictor.predict(bgr, classes=CLASSES, threshold=THRESHOLD, bgr=True)
        assert torch.equal(from_bgr.boxes, from_pixels.boxes), name
        [listed] = predictor.predict_prompts([bgr], predictor.class_prompts(CLASSES), THRESHOLD, bgr=True)
        assert torch.equal(listed.boxes, from_pixels.boxes)


def test_detect_and_eval_see_the_same_frame_as_predict(dataset, predictor, tmp_path, capsys):
    pytest.importorskip("pycocotools")
    from glip.eval import EvalOptions, evaluate_coco

    folder, expected = dataset
    names = sorted(expected)
    out = tmp_path / "detect"
    argv = ["detect", str(folder), "--classes", ",".join(CLASSES), "--model", "random:tiny_random"]
    assert main([*argv, "--threshold", str(THRESHOLD), "--out", str(out)]) == 0
    detected = {Path(r["file"]).name: r for r in json.loads((out / "predictions.json").read_text())}
    assert sorted(detected) == names

    images = [
        {"id": i + 1, "file_name": n, "width": int(expected[n].shape[1]), "height": int(expected[n].shape[0])}
        for i, n in enumerate(names)
    ]
    ann = tmp_path / "ann.json"
    categories = [{"id": 1, "name": CLASSES[0]}, {"id": 2, "name": CLASSES[1]}]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 30, 30], "area": 900, "iscrowd": 0}
    ]
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    eval_out = tmp_path / "eval"
    evaluate_coco(predictor, ann, folder, EvalOptions(out_dir=eval_out, progress=False, report=False))
    lines = (eval_out / "predictions.cache.jsonl").read_text().splitlines()[1:]
    records = {names[r["id"] - 1]: r for r in map(json.loads, lines)}

    for name in names:
        mine = predictor.predict(str(folder / name), classes=CLASSES, threshold=THRESHOLD)
        record = detected[name]
        assert (record["width"], record["height"]) == mine.image_size
        assert [d["box_xyxy"] for d in record["detections"]] == boxes_of(mine), name
        kept = [i for i, score in enumerate(records[name]["scores"]) if score >= THRESHOLD]
        assert len(kept) == len(mine)
        eval_boxes = torch.tensor([records[name]["boxes"][i] for i in kept], dtype=torch.float64)
        assert torch.allclose(eval_boxes, mine.boxes.double(), atol=1e-4), name


def test_detect_reports_an_image_over_the_pixel_limit_and_processes_the_others(tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    make_image(80, 100, 3).save(folder / "a.png")
    Image.new("1", (20000, 20000)).save(folder / "huge.png")  # 400 megapixels, a few kB
    make_image(90, 70, 4).save(folder / "z.png")
    out = tmp_path / "out"
    argv = ["detect", str(folder), "--classes", "cat", "--model", "random:tiny_random", "--out", str(out)]
    assert main(argv) == 1  # finished; the bad file is reported, as for other unreadable files
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "DecompressionBomb" not in captured.err
    assert "huge.png has 400,000,000 pixels" in captured.err and "--max-pixels" in captured.err
    assert "2 image(s) processed, 1 skipped" in captured.out
    records = json.loads((out / "predictions.json").read_text())
    assert sorted(Path(r["file"]).name for r in records) == ["a.png", "z.png"]
    [error] = json.loads((out / "errors.json").read_text())
    assert Path(error["file"]).name == "huge.png"
