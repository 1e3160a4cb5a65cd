"""How an evaluation runs, as one frozen object: :class:`EvalOptions`.

Every ``evaluate_*`` / ``score_*`` function and :func:`glip.eval.inference.run_inference` takes
``options: EvalOptions`` beside its task-specific arguments (model, annotation file, image folder and the
protocol settings of the task, such as LVIS's chunk size)::

    from glip.eval import EvalOptions, evaluate_coco
    options = EvalOptions(batch_size=4, out_dir="results/coco")
    result = evaluate_coco(model, "instances_val2017.json", "val2017", options)

The options change how the work is done (batching, caching, reporting, the scorer's implementation),
never the protocol, except ``detections_per_img`` and ``max_images`` whose defaults follow the official
protocols. A bad value raises :class:`EvalOptionsError` (an :class:`~glip.eval.common.EvalError`, so a
``ValueError``) naming the field.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from glip.eval.common import EvalError

if TYPE_CHECKING:
    import torch

#: COCO-format scorers (same numbers; faster-coco-eval is faster on big sets).
BACKENDS: tuple[str, ...] = ("pycocotools", "faster-coco-eval")


class EvalOptionsError(EvalError):
    """A bad :class:`EvalOptions` value or an unknown field (the message names it and what to give)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    """Run options of an evaluation (keyword arguments only; every field has a default).

    batch_size:         images per forward pass, >= 1 (default 1; Flickr: unused, one record at a time).
    max_images:         evaluate the first N images (sorted by id; Flickr: the first N (image, sentence)
                        records), >= 1; None (default): all.
    detections_per_img: the model's cap on detections per image (and per prompt chunk), >= 1; None
                        (default): the task's official value (COCO / ODinW / Flickr 100, LVIS 300). When
                        scoring an LVIS predictions file: the standard protocol's per-image cap.
    device:             where a model that is not a predictor yet runs ("cpu", "cuda:1", a
                        ``torch.device``); None (default): the predictor's default.
    out_dir:            folder of the resumable prediction cache and of the report; None (default): no
                        file is read or written.
    resume:             reuse the predictions cached in ``out_dir`` by an earlier run with the same model,
                        data and settings (default True).
    progress:           show a progress bar on rank 0 (default True).
    report:             write metrics.json, summary.md, the plots and the examples into ``out_dir``
                        (default True; without ``out_dir`` nothing is written).
    num_examples:       images drawn in examples.png, >= 0 (default 8; 0: none).
    model_name:         the model's name in the report and the cache fingerprint; None (default): the
                        model config's ``name``.
    backend:            COCO-format scorer: "pycocotools" (default) or "faster-coco-eval" (same numbers;
                        LVIS uses the ``lvis`` package, Flickr its own recall).
    masks:              COCO-format tasks: also mask AP (``COCOeval(iouType="segm")``) of the predictor's
                        mask head (default False).

    Under ``torchrun`` every rank takes part with the same options: the images are sharded across the
    processes, and rank 0 scores and writes the report.
    """

    batch_size: int = 1
    max_images: int | None = None
    detections_per_img: int | None = None
    device: str | torch.device | None = None
    out_dir: str | os.PathLike[str] | None = None
    resume: bool = True
    progress: bool = True
    report: bool = True
    num_examples: int = 8
    model_name: str | None = None
    backend: str = "pycocotools"
    masks: bool = False

    def __new__(cls, *args: Any, **kwargs: Any) -> EvalOptions:
        # before the generated __init__, so that a typo is one clear message rather than a TypeError
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise EvalOptionsError(
                f"unknown EvalOptions field(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
            )
        if args:
            raise EvalOptionsError(
                f"EvalOptions takes keyword arguments only (e.g. EvalOptions(batch_size=4)), "
                f"got {len(args)} positional"
            )
        return super().__new__(cls)

    def __post_init__(self) -> None:
        def bad(name: str, wanted: str) -> EvalOptionsError:
            return EvalOptionsError(f"EvalOptions.{name} must be {wanted}, got {getattr(self, name)!r}")

        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise bad("batch_size", "an integer >= 1")
        for name in ("max_images", "detections_per_img"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise bad(name, "an integer >= 1 or None")
        if not _is_int(self.num_examples) or self.num_examples < 0:
            raise bad("num_examples", "an integer >= 0")
        for name in ("resume", "progress", "report", "masks"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "True or False")
        if self.backend not in BACKENDS:
            raise bad("backend", " or ".join(map(repr, BACKENDS)))
        if self.out_dir is not None and not isinstance(self.out_dir, str | os.PathLike):
            raise bad("out_dir", "a folder path or None")
        if self.model_name is not None and not isinstance(self.model_name, str):
            raise bad("model_name", "a string or None")

    def replace(self, **changes: Any) -> EvalOptions:
        """A copy with ``changes`` applied (checked like the constructor's arguments)."""
        return dataclasses.replace(self, **changes)
