"""The streaming / sharded pseudo-labelling pipeline in one process: output format, bad inputs, resume rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glip.data.build import build_dataset
from glip.selftrain.pseudo_label import (
    PseudoLabelConfig,
    merge_shards,
    output_paths,
    pseudo_label,
    read_lines,
    resolve_image,
)
from glip.selftrain.teacher import Teacher

from .conftest import small_random_model


@pytest.fixture(scope="module")
def teacher():
    return Teacher(small_random_model())


def _corpus_with_problems(corpus: Path, tmp: Path) -> Path:
    lines = (corpus / "captions.jsonl").read_text().splitlines()
    (tmp / "broken.png").write_bytes(b"not a png at all")
    extra = [
        json.dumps({"image": "missing.png", "caption": "a red circle"}),
        json.dumps({"image": str(tmp / "broken.png"), "caption": "a blue square"}),
        '{"image": "train_000000.png", "caption": ',  # malformed JSON
        "",  # blank lines are skipped silently
        json.dumps({"image": "train_000001.png", "caption": "quickly, very quickly!"}),  # no noun phrase
        json.dumps({"image": "train_000002.png"}),  # no caption
    ]
    path = tmp / "captions.jsonl"
    path.write_text("\n".join(lines[:3] + extra + lines[3:]) + "\n")
    return path


def test_output_is_odvg_grounding_with_exact_spans_and_stats(teacher, corpus, tmp_path):
    captions = _corpus_with_problems(corpus, tmp_path)
    out = tmp_path / "pseudo.jsonl"
    config = PseudoLabelConfig(threshold=0.5, shard_size=4, batch_size=2, max_boxes_per_phrase=3)
    summary = pseudo_label(teacher, read_lines(captions), corpus / "images", out, config)
    stats = summary.stats
    num_lines = len(captions.read_text().splitlines())
    assert summary.num_lines == num_lines and summary.num_shards == -(-num_lines // 4)
    assert (stats.pairs, stats.bad_images, stats.bad_records) == (11, 2, 3)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert stats.records == len(records) == 6 - stats.no_confident_phrase
    assert len(records) >= 3, "the untrained teacher (bias 0) should clear 0.5 somewhere"
    assert [r["source_line"] for r in records] == sorted(r["source_line"] for r in records)
    boxes = phrases = 0
    for record in records:
        caption = record["grounding"]["caption"]
        assert record["filename"].startswith("train_") and (record["width"], record["height"]) == (96, 96)
        for region in record["grounding"]["regions"]:
            phrases += 1
            boxes += len(region["bbox"])
            assert 1 <= len(region["bbox"]) == len(region["scores"]) <= 3
            assert all(score > 0.5 for score in region["scores"])
            for beg, end in region["tokens_positive"]:
                assert 0 <= beg < end <= len(caption)
                assert caption[beg:end].lower() == region["phrase"].lower()
            for x1, y1, x2, y2 in region["bbox"]:
                assert 0 <= x1 <= x2 <= 96 and 0 <= y1 <= y2 <= 96
    assert (stats.boxes, stats.phrases_kept) == (boxes, phrases)
    assert sum(stats.kept_histogram) == boxes and sum(stats.candidates) >= boxes
    written = json.loads(summary.stats_path.read_text())
    assert written["records"] == len(records) and written["num_unique_phrases"] == len(stats.unique_phrases)
    assert summary.histogram_path.read_bytes()[:4] == b"\x89PNG"
    problems = [json.loads(line) for line in summary.errors_path.read_text().splitlines()]
    assert sorted(p["kind"] for p in problems) == ["bad_images"] * 2 + ["bad_records"] * 3
    assert any("missing.png" in p["error"] for p in problems)
    # `glip train` reads it as ODVG grounding, with the same boxes (legacy convention) and spans
    dataset = build_dataset(out, corpus / "images", None)
    assert type(dataset).__name__ == "ODVGDataset" and len(dataset) == len(records) and dataset.skipped == 0
    first = dataset.record(0)
    region = records[0]["grounding"]["regions"][0]
    x1, y1, x2, y2 = region["bbox"][0]
    assert first.boxes[0].tolist() == pytest.approx([x1, y1, x2 - 1, y2 - 1], abs=1e-4)
    assert first.tokens_positive[0] == [tuple(s) for s in region["tokens_positive"]]


def test_fresh_run_refuses_an_old_one_and_resume_checks_settings(teacher, corpus, tmp_path):
    out = tmp_path / "p.jsonl"
    lines = list(read_lines(corpus / "captions.jsonl"))[:2]
    config = PseudoLabelConfig(threshold=0.5, shard_size=1)
    pseudo_label(teacher, lines, corpus / "images", out, config)
    with pytest.raises(FileExistsError, match="resume"):
        pseudo_label(teacher, lines, corpus / "images", out, config)
    with pytest.raises(ValueError, match="threshold: 0.5 -> 0.6"):
        pseudo_label(teacher, lines, corpus / "images", out, PseudoLabelConfig(threshold=0.6, shard_size=1),
                     resume=True)  # fmt: skip
    before = out.read_bytes()
    summary = pseudo_label(teacher, lines, corpus / "images", out, config, resume=True)  # all done already
    assert out.read_bytes() == before and summary.num_shards == 2
    (output_paths(out)["parts"] / "part-000001.json").unlink()  # as if that shard never finished
    with pytest.raises(ValueError, match=r"1 of 2 shards are not finished: 1 \(lines 1-1\)"):
        merge_shards(out, 2)


def test_resolve_image_paths_and_urls(tmp_path):
    assert resolve_image("a/b.jpg", tmp_path) == (tmp_path / "a" / "b.jpg", "a/b.jpg")
    assert resolve_image("/abs/c.png", tmp_path) == (Path("/abs/c.png"), "/abs/c.png")
    path, name = resolve_image("https://images.example.com/x/y%20z.jpg?size=large#top", tmp_path)
    assert name == "images.example.com/x/y z.jpg" and path == tmp_path / name
    with pytest.raises(ValueError, match="leaves the image directory"):
        resolve_image("http://host/../../etc/passwd", tmp_path)
    with pytest.raises(FileNotFoundError, match="captions file not found"):
        read_lines(tmp_path / "nope.jsonl")


def test_config_is_validated():
    with pytest.raises(ValueError, match="shard_size"):
        PseudoLabelConfig(shard_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        PseudoLabelConfig(batch_size=0)
    with pytest.raises(ValueError, match="threshold"):
        PseudoLabelConfig(threshold=-0.1)


def test_student_trains_on_human_data_mixed_with_pseudo_labels(teacher, corpus, tmp_path):
    from glip.cli import main
    from glip.data.build import build_training_set
    from glip.data.transforms import TrainTransform

    out = tmp_path / "pseudo.jsonl"
    pseudo_label(teacher, read_lines(corpus / "captions.jsonl"), corpus / "images", out, PseudoLabelConfig())
    assert out.read_text().strip()
    anns, dirs = [corpus / "detection.json", out], [corpus / "images"] * 2
    mixed = build_training_set(anns, dirs, TrainTransform((96,), 128, seed=0), weights=[1, 2])
    pseudo_items = [i for i in range(len(mixed)) if mixed.source(i)[0] == 1]
    assert pseudo_items, "the mixture never drew a pseudo-labelled record"
    sample = mixed[pseudo_items[0]]
    assert len(sample.target.boxes) > 0 and bool((sample.target.token_map.sum(dim=1) > 0).all())
    code = main(
        [
            "train",
            "--preset",
            "tiny_random",
            "--train-ann",
            *map(str, anns),
            "--train-images",
            *map(str, dirs),
        ]
        + ["--weights", "1,2", "--out", str(tmp_path / "student"), "--max-steps", "2", "--batch-size", "2"]
        + [
            "--device",
            "cpu",
            "--set",
            "input.train_min_sizes=(96,)",
            "input.train_max_size=128",
            "progress=False",
        ]
    )
    assert code == 0 and (tmp_path / "student" / "model" / "model.safetensors").exists()


def test_resume_refuses_another_captions_file(teacher, corpus, tmp_path):
    """The run pins its input (size + first and last lines): another file is refused, a moved copy is fine."""
    captions = tmp_path / "captions.jsonl"
    lines = (corpus / "captions.jsonl").read_text().splitlines()
    captions.write_text("\n".join(lines[:2]) + "\n")
    out = tmp_path / "p.jsonl"
    config = PseudoLabelConfig(threshold=0.5, shard_size=1)

    def run(path: Path):
        return pseudo_label(teacher, read_lines(path), corpus / "images", out, config, resume=True,
                            captions=str(path))  # fmt: skip

    run(captions)
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(lines[2:4]) + "\n")
    with pytest.raises(ValueError, match="captions file is not the one this run started with"):
        run(other)
    captions.write_text("\n".join(lines[:3]) + "\n")  # the same file, grown
    with pytest.raises(ValueError, match="not the one"):
        run(captions)
    moved = tmp_path / "moved.jsonl"
    moved.write_text("\n".join(lines[:2]) + "\n")
    assert run(moved).num_lines == 2
