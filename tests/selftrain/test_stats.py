"""Statistics: per-shard counts sum exactly; the histogram PNG is drawn with or without matplotlib."""

from __future__ import annotations

import sys

import torch
from PIL import Image

from glip.selftrain.stats import HISTOGRAM_BINS, PseudoLabelStats, save_score_histogram


def _stats(phrases: list[str], scores: list[float], candidates: list[float]) -> PseudoLabelStats:
    stats = PseudoLabelStats(pairs=2, records=1, bad_images=1)
    stats.add_candidates(torch.tensor(candidates))
    for phrase in phrases:
        stats.add_kept(phrase, torch.tensor(scores))
    return stats


def test_bins_and_merge_and_round_trip():
    a = _stats(["a dog", "A Dog"], [0.55, 0.999], [0.0, 0.055, 0.55, 1.0])
    assert a.boxes == 4 and a.phrases_kept == 2 and a.unique_phrases == {"a dog"}
    assert a.candidates[0] == 1 and a.candidates[5] == 1 and a.candidates[55] == 1
    assert a.candidates[HISTOGRAM_BINS - 1] == 1  # a score of exactly 1 goes to the last bin
    assert a.kept_histogram[55] == 2 and a.kept_histogram[99] == 2
    b = _stats(["a cat"], [0.7], [0.7])
    total = PseudoLabelStats.total([a, b])
    assert (total.pairs, total.records, total.bad_images, total.boxes) == (4, 2, 2, 5)
    assert total.unique_phrases == {"a dog", "a cat"}
    assert sum(total.candidates) == 5 and total.kept_histogram[70] == 1
    assert PseudoLabelStats.from_dict(total.to_dict()) == total
    assert total.to_dict(with_phrases=False)["num_unique_phrases"] == 2


def test_histogram_png_with_and_without_matplotlib(tmp_path, monkeypatch):
    stats = _stats(["a dog"], [0.6, 0.8], [0.1, 0.3, 0.6, 0.8])
    path = save_score_histogram(stats, tmp_path / "with.png", threshold=0.5)
    assert Image.open(path).size[0] > 100
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    path = save_score_histogram(stats, tmp_path / "without.png", threshold=0.5)
    image = Image.open(path).convert("RGB")
    assert image.size == (700, 360)
    assert (214, 39, 40) in {c for _, c in image.getcolors(1 << 16)}  # the threshold line is drawn
