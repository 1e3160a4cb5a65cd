"""Evaluating a (randomly initialised, tiny) model: COCO, LVIS, ODinW, Flickr; caching and resuming; the
training hook."""

from __future__ import annotations

import json

import pytest

from glip.eval import (
    EvalOptions,
    evaluate_coco,
    evaluate_flickr,
    evaluate_lvis,
    evaluate_odinw,
    score_coco,
    score_lvis,
)
from glip.eval.data import load_coco_dataset, records_to_coco_results
from glip.eval.flickr import load_flickr_dataset, load_flickr_predictions, score_flickr
from glip.eval.inference import CACHE_NAME
from glip.predictor import GLIPPredictor

from .conftest import make_coco_set, plot_files, write_json

pytest.importorskip("pycocotools")


def read_cache(out):
    lines = (out / CACHE_NAME).read_text().splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


def test_coco_with_a_model_writes_the_report_and_scores_its_own_predictions(
    tmp_path, coco_set, tiny_random_model
):
    ann, images = coco_set
    config = tiny_random_model.config
    out = tmp_path / "out"
    options = EvalOptions(out_dir=out, progress=False, detections_per_img=7)
    result = evaluate_coco(tiny_random_model, ann, images, options)
    assert tiny_random_model.config is config  # the temporary post-processing setting is undone
    for name in (
        "metrics.json",
        "summary.md",
        "examples.png",
        CACHE_NAME,
        *plot_files("pr_curves.png", "category_ap.png"),
    ):
        assert (out / name).is_file(), name
    predictions = json.loads((out / "predictions.coco.json").read_text())
    assert predictions and all(p["category_id"] in (1, 3, 7) for p in predictions)
    per_image = {}
    for p in predictions:
        per_image[p["image_id"]] = per_image.get(p["image_id"], 0) + 1
    assert max(per_image.values()) <= 7  # detections_per_img reached the model
    assert result.metrics == score_coco(ann, predictions).metrics
    assert result.settings["num_prompts"] == 1 and result.settings["prompts"] == [
        "red circle. blue square. traffic light"
    ]
    written = json.loads((out / "metrics.json").read_text())
    assert written["metrics"]["AP"] == result.metrics["AP"]
    # boxes are exported with the official legacy xywh (w = x2 - x1 + 1) from the cached xyxy boxes
    _, records = read_cache(out)
    first = records[0]
    x1, y1, x2, y2 = first["boxes"][0]
    match = [p for p in predictions if p["image_id"] == first["id"]][0]
    assert match["bbox"] == [x1, y1, x2 - x1 + 1, y2 - y1 + 1]


def test_predictor_input_chunking_and_max_images(coco_set, tiny_random_model):
    ann, images = coco_set
    predictor = GLIPPredictor(tiny_random_model)
    result = evaluate_coco(predictor, ann, images, EvalOptions(max_images=2, progress=False), chunk_size=1)
    assert result.settings["num_prompts"] == 3 and result.metrics["num_images"] == 2
    assert result.files == {}  # no out_dir: nothing written


def test_an_interrupted_evaluation_resumes_from_its_cache(tmp_path, coco_set, tiny_random_model, monkeypatch):
    ann, images = coco_set
    options = EvalOptions(progress=False, report=False)
    full = evaluate_coco(tiny_random_model, ann, images, options)

    out = tmp_path / "resumed"
    calls = []
    original = GLIPPredictor._predict_loaded

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GLIPPredictor, "_predict_loaded", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate_coco(tiny_random_model, ann, images, options.replace(out_dir=out))
    _, cached = read_cache(out)
    assert [r["id"] for r in cached] == [1, 2]
    with (out / CACHE_NAME).open("a") as handle:
        handle.write('{"id": 3, "boxes": [[1, 2')  # killed in the middle of a write

    calls.clear()
    monkeypatch.setattr(
        GLIPPredictor, "_predict_loaded", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    resumed = evaluate_coco(tiny_random_model, ann, images, options.replace(out_dir=out))
    assert len(calls) == 3  # images 3, 4, 5 only
    assert resumed.metrics == full.metrics
    _, cached = read_cache(out)
    assert [r["id"] for r in cached] == [1, 2, 3, 4, 5]  # the partial line is gone

    calls.clear()  # other settings: the cache is not reused
    other = options.replace(out_dir=out, detections_per_img=50, max_images=2)
    evaluate_coco(tiny_random_model, ann, images, other)
    assert len(calls) == 2
    calls.clear()
    evaluate_coco(tiny_random_model, ann, images, other)
    assert len(calls) == 0
    evaluate_coco(tiny_random_model, ann, images, other.replace(resume=False))
    assert len(calls) == 2


def test_training_hook(coco_set, tiny_random_model):
    from glip.eval.hooks import coco_eval_hook

    ann, images = coco_set
    tiny_random_model.train()
    metrics = coco_eval_hook(ann, images, max_images=2)(tiny_random_model, 10)
    assert tiny_random_model.training
    assert set(metrics) >= {"AP", "AP50", "AR100"} and all(isinstance(v, float) for v in metrics.values())
    tiny_random_model.eval()


def make_lvis_file(ann, tmp_path):
    data = json.loads(ann.read_text())
    for cat, freq in zip(data["categories"], "frc"):
        cat["frequency"] = freq
    for image in data["images"]:
        image["coco_url"] = f"http://images.cocodataset.org/images/{image.pop('file_name')}"
        image["neg_category_ids"] = [7]
        image["not_exhaustive_category_ids"] = []
    for a in data["annotations"]:
        a.pop("iscrowd")
    return write_json(tmp_path / "lvis.json", data)


def test_lvis_with_a_model(tmp_path, coco_set, tiny_random_model):
    pytest.importorskip("lvis")
    ann, images = coco_set
    lvis_ann = make_lvis_file(ann, tmp_path)
    out = tmp_path / "lvis"
    # image_dir = the COCO root: the file is found from coco_url's "images/imgN.png"
    result = evaluate_lvis(
        tiny_random_model, lvis_ann, images.parent, EvalOptions(out_dir=out, progress=False), chunk_size=2
    )
    assert result.settings["num_prompts"] == 2 and result.settings["detections_per_img"] == 300
    assert result.settings["protocol"] == "fixed AP"
    _, records = read_cache(out)
    dataset = load_coco_dataset(lvis_ann, "lvis")
    results = records_to_coco_results({r["id"]: r for r in records}, dataset.image_ids, plus_one=False)
    assert result.metrics == score_lvis(dataset, results).metrics
    assert {"APr", "APc", "APf"} <= set(result.metrics)
    assert (out / "summary.md").read_text().count("| 1 | red circle | f |") == 1


def test_odinw_suite_with_prompt_overrides_and_average(tmp_path, tiny_random_model):
    ann_a, images_a = make_coco_set(tmp_path / "a", num_images=3, seed=0)
    ann_b, images_b = make_coco_set(tmp_path / "b", num_images=2, seed=1)
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"""datasets:
  - name: first
    ann: {ann_a.relative_to(tmp_path)}
    images: {images_a.relative_to(tmp_path)}
  - name: second set
    ann: {ann_b}
    images: {images_b}
    override_category: '[{{"id": 1, "name": "ball"}}, {{"id": 3, "name": "box"}}]'
    caption_prompt:
      - {{"prefix": "a ", "name": "ball", "suffix": " shape"}}
      - {{"prefix": "", "name": "box", "suffix": ""}}
      - {{"prefix": "", "name": "light", "suffix": ""}}
"""
    )
    out = tmp_path / "odinw"
    result = evaluate_odinw(tiny_random_model, suite, EvalOptions(out_dir=out, progress=False))
    first = result.details["first"]["metrics"]["AP"]
    second = result.details["second_set"]["metrics"]["AP"]
    assert result.metrics["AP_avg"] == pytest.approx((first + second) / 2)
    assert result.metrics["AP/first"] == first and [r["name"] for r in result.per_category] == [
        "first",
        "second_set",
    ]
    assert result.details["second_set"]["settings"]["prompts"] == ["a ball shape. box. light"]
    written = ["metrics.json", "summary.md", "first/metrics.json", "second_set/summary.md"]
    for name in (*written, *plot_files("odinw_ap.png")):
        assert (out / name).is_file(), name


def make_flickr_file(ann, tmp_path):
    data = json.loads(ann.read_text())
    images, annotations = [], []
    caption = "A red circle next to a blue square ."
    circle, square = [0, 12], [21, 34]
    for image in data["images"]:
        boxes = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        for sentence_id in range(2):
            record = dict(
                image, id=len(images), caption=caption, original_img_id=image["id"], sentence_id=sentence_id
            )
            record["tokens_positive_eval"] = [[circle], [square]] if boxes else []
            images.append(record)
            for a in boxes:
                span = circle if a["category_id"] == 1 else square
                annotations.append(
                    {
                        "id": len(annotations),
                        "image_id": record["id"],
                        "bbox": a["bbox"],
                        "tokens_positive": [span],
                    }
                )
    return write_json(
        tmp_path / "flickr.json", {"images": images, "annotations": annotations, "categories": []}
    )


def test_flickr_with_a_model(tmp_path, coco_set, tiny_random_model):
    ann, images = coco_set
    flickr = make_flickr_file(ann, tmp_path)
    out = tmp_path / "flickr"
    options = EvalOptions(out_dir=out, progress=False, max_images=4)
    result = evaluate_flickr(tiny_random_model, flickr, images, options)
    assert result.metrics["num_sentences"] == 4 and result.metrics["num_phrases"] == 8
    dataset = load_flickr_dataset(flickr)
    dataset.sentences = {k: dataset.sentences[k] for k in dataset.keys[:4]}
    again = score_flickr(dataset, load_flickr_predictions(out / "predictions.flickr.json", dataset))
    assert again == result.metrics
    for name in ("metrics.json", "summary.md", "examples.png", *plot_files("recall.png")):
        assert (out / name).is_file(), name


@pytest.mark.parametrize("name", ["..", "../..", ".hidden", "a/../../b"])
def test_odinw_dataset_names_stay_inside_out_dir(tmp_path, tiny_random_model, name):
    ann, images = make_coco_set(tmp_path / "a", num_images=1, seed=0)
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"datasets:\n  - name: '{name}'\n    ann: {ann}\n    images: {images}\n")
    out = tmp_path / "runs" / "odinw"
    result = evaluate_odinw(tiny_random_model, suite, EvalOptions(out_dir=out, progress=False, report=False))
    (folder,) = result.details
    assert "/" not in folder and not folder.startswith(".")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["odinw"]  # nothing beside out_dir
    assert (out / folder).is_dir()
