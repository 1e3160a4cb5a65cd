"""Mixing several datasets by weight (e.g. detection + grounding data in one ``glip train`` run)."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

__all__ = ["MixedDataset"]


class MixedDataset(Dataset):
    """Draws every item from one of the datasets with probability proportional to its weight.

    Item ``i`` of epoch ``e`` is fully determined by ``(seed, e, i)``: a generator seeded with them picks the
    dataset (by weight) and then a uniformly random index in it, so the mix is reproducible, independent of
    the DataLoader's worker count, and changes every epoch (``set_epoch``, also forwarded to the datasets).
    Draws are with replacement: within an epoch some items repeat and some are not seen.

    Args:
        datasets: ``[(dataset, weight), ...]``, weights >= 0 with a positive sum (a dataset with weight > 0
            must not be empty).
        length: items per epoch (default: the sum of the datasets' lengths).
        seed: base seed.
    """

    def __init__(
        self, datasets: Sequence[tuple[Any, float]], length: int | None = None, seed: int = 0
    ) -> None:
        if not datasets:
            raise ValueError("MixedDataset needs at least one (dataset, weight) pair")
        parts, weights = [], []
        for i, item in enumerate(datasets):
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise ValueError(f"entry {i} must be a (dataset, weight) pair, got {item!r}")
            dataset, weight = item
            weight = float(weight)
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"entry {i}: weight must be finite and >= 0, got {weight}")
            if weight > 0 and len(dataset) == 0:
                raise ValueError(
                    f"entry {i}: dataset {type(dataset).__name__} is empty but has weight {weight}"
                )
            parts.append(dataset)
            weights.append(weight)
        total = sum(weights)
        if total <= 0:
            raise ValueError("the weights sum to 0")
        self.datasets = parts
        self.weights = [w / total for w in weights]
        self._cumulative = np.cumsum(self.weights)
        self.length = int(length) if length is not None else sum(len(d) for d in parts)
        if self.length <= 0:
            raise ValueError(f"length must be positive, got {self.length}")
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for dataset in self.datasets:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)

    def source(self, index: int) -> tuple[int, int]:
        """``(dataset position, index in that dataset)`` of item ``index`` in the current epoch."""
        index = operator.index(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for MixedDataset of {self.length} items")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        which = int(np.searchsorted(self._cumulative, rng.random(), side="right"))
        which = min(which, len(self.datasets) - 1)
        while self.weights[which] == 0:  # float round-off at the very end of the cumulative sum
            which -= 1
        return which, int(rng.integers(len(self.datasets[which])))

    def __getitem__(self, index: int) -> Any:
        which, inner = self.source(index)
        return self.datasets[which][inner]

    @property
    def skipped(self) -> int:
        """Records skipped by the datasets (in this process)."""
        return sum(int(getattr(d, "skipped", 0)) for d in self.datasets)
