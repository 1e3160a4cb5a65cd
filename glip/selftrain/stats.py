"""Per-run statistics of pseudo-labelling: counts, unique phrases, the teacher's score histogram.

Statistics are kept per output shard (in the shard's manifest) and summed when shards are merged, so an
interrupted, resumed or multi-process run reports exactly what one uninterrupted run reports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from glip.fileio import atomic_save

__all__ = ["HISTOGRAM_BINS", "PseudoLabelStats", "save_score_histogram"]

#: Score histogram bins: [0, 0.01), [0.01, 0.02), ..., [0.99, 1.0].
HISTOGRAM_BINS = 100

_COUNTS = (
    "pairs",
    "records",
    "no_confident_phrase",
    "bad_images",
    "bad_records",
    "phrases",
    "phrases_kept",
    "boxes",
)


@dataclass
class PseudoLabelStats:
    """Counts of one shard or of a whole run.

    pairs: input lines with a record (blank lines are not pairs); records: records written;
    no_confident_phrase: pairs skipped because no phrase had a box above the threshold; bad_images: pairs
    skipped because the image is missing or unreadable; bad_records: malformed lines, missing fields,
    captions too long or without a noun phrase; phrases: noun phrases grounded; phrases_kept: phrases
    written (with a box); boxes: boxes written; unique_phrases: the distinct written phrases (lower case);
    candidates / kept_histogram: per score bin, the teacher's detections after the per-phrase NMS and the
    boxes written.
    """

    pairs: int = 0
    records: int = 0
    no_confident_phrase: int = 0
    bad_images: int = 0
    bad_records: int = 0
    phrases: int = 0
    phrases_kept: int = 0
    boxes: int = 0
    unique_phrases: set[str] = field(default_factory=set)
    candidates: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BINS)
    kept_histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BINS)

    @staticmethod
    def _bins(scores: torch.Tensor) -> list[int]:
        index = (scores.float().clamp(0, 1) * HISTOGRAM_BINS).long().clamp(max=HISTOGRAM_BINS - 1)
        return torch.bincount(index, minlength=HISTOGRAM_BINS).tolist()

    def add_candidates(self, scores: torch.Tensor) -> None:
        self.candidates = [a + b for a, b in zip(self.candidates, self._bins(scores))]

    def add_kept(self, phrase: str, scores: torch.Tensor) -> None:
        self.phrases_kept += 1
        self.boxes += int(scores.numel())
        self.unique_phrases.add(phrase.lower())
        self.kept_histogram = [a + b for a, b in zip(self.kept_histogram, self._bins(scores))]

    def merge(self, other: PseudoLabelStats) -> PseudoLabelStats:
        """The sum of two statistics (a new object)."""
        merged = PseudoLabelStats(**{k: getattr(self, k) + getattr(other, k) for k in _COUNTS})
        merged.unique_phrases = self.unique_phrases | other.unique_phrases
        merged.candidates = [a + b for a, b in zip(self.candidates, other.candidates)]
        merged.kept_histogram = [a + b for a, b in zip(self.kept_histogram, other.kept_histogram)]
        return merged

    @classmethod
    def total(cls, parts: Iterable[PseudoLabelStats]) -> PseudoLabelStats:
        result = cls()
        for part in parts:
            result = result.merge(part)
        return result

    def to_dict(self, with_phrases: bool = True) -> dict[str, Any]:
        """JSON-ready; ``with_phrases=False`` writes only the number of unique phrases."""
        data: dict[str, Any] = {k: getattr(self, k) for k in _COUNTS}
        data["num_unique_phrases"] = len(self.unique_phrases)
        if with_phrases:
            data["unique_phrases"] = sorted(self.unique_phrases)
        data["histogram"] = {
            "bin_width": 1.0 / HISTOGRAM_BINS,
            "candidates": list(self.candidates),
            "kept": list(self.kept_histogram),
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PseudoLabelStats:
        stats = cls(**{k: int(data[k]) for k in _COUNTS})
        stats.unique_phrases = set(data.get("unique_phrases", []))
        stats.candidates = [int(v) for v in data["histogram"]["candidates"]]
        stats.kept_histogram = [int(v) for v in data["histogram"]["kept"]]
        return stats

    def replace(self, **changes: Any) -> PseudoLabelStats:
        return dataclasses.replace(self, **changes)


def save_score_histogram(stats: PseudoLabelStats, path: str | Path, threshold: float) -> Path:
    """Draw the score histogram (candidates in grey, written boxes in blue, the threshold in red) as a PNG:
    matplotlib when installed, else plain PIL drawing."""
    path = Path(path)
    edges = [i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS)]
    title = (
        f"teacher scores: {sum(stats.candidates)} detections, {stats.boxes} kept (> {threshold:g}), "
        f"{stats.records} records"
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _pil_histogram(stats, path, threshold, title)
    figure, axis = plt.subplots(figsize=(7, 3.6), dpi=100)
    width = 1.0 / HISTOGRAM_BINS
    axis.bar(edges, stats.candidates, width=width, align="edge", color="0.7", label="after per-phrase NMS")
    axis.bar(edges, stats.kept_histogram, width=width, align="edge", color="tab:blue", label="written")
    axis.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:g}")
    axis.set_xlim(0, 1)
    axis.set_xlabel("score")
    axis.set_ylabel("boxes")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    atomic_save(path, lambda handle: figure.savefig(handle, format="png"))
    plt.close(figure)
    return path


def _pil_histogram(stats: PseudoLabelStats, path: Path, threshold: float, title: str) -> Path:
    from PIL import Image, ImageDraw

    width, height, margin = 700, 360, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    top = max(max(stats.candidates), 1)
    bar = (width - 2 * margin) / HISTOGRAM_BINS
    base = height - margin
    for i, (count, kept) in enumerate(zip(stats.candidates, stats.kept_histogram)):
        x0 = margin + i * bar
        for value, colour in ((count, (180, 180, 180)), (kept, (31, 119, 180))):
            if value:
                draw.rectangle(
                    [x0, base - (height - 2 * margin) * value / top, x0 + bar - 1, base], fill=colour
                )
    x = margin + threshold * (width - 2 * margin)
    draw.line([x, margin, x, base], fill=(214, 39, 40), width=2)
    draw.line([margin, base, width - margin, base], fill="black")
    draw.text((margin, 10), title, fill="black")
    draw.text((margin, base + 8), "0", fill="black")
    draw.text((width - margin - 8, base + 8), "1", fill="black")
    atomic_save(path, lambda handle: image.save(handle, format="PNG"))
    return path
