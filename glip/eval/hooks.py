"""Periodic evaluation during training: hooks for the ``eval_fn`` argument of :func:`glip.engine.train.fit`.

The engine imports no evaluation code; the caller (the ``glip train`` command) builds the hook and passes it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn


def coco_eval_hook(ann_file: str | Path, image_dir: str | Path, max_images: int | None = None) -> Callable:
    """An ``eval_fn(model, step) -> metrics`` computing COCO box AP on ``ann_file`` (all ranks take part)."""

    def evaluate(model: nn.Module, step: int) -> dict[str, float]:
        from glip.eval.coco import evaluate_coco
        from glip.eval.options import EvalOptions

        was_training = model.training
        model.eval()
        try:
            result = evaluate_coco(
                model, ann_file, image_dir, EvalOptions(max_images=max_images, progress=False)
            )
        finally:
            model.train(was_training)
        return {k: v for k, v in result.metrics.items() if isinstance(v, float)}

    return evaluate
