"""Training data for GLIP: detection and grounding datasets -> :class:`Sample` -> :func:`collate` -> :class:`Batch`.

One format per module: :mod:`glip.data.coco` (COCO detection as grounding), :mod:`glip.data.mdetr` (MDETR /
GoldG / Flickr grounding JSON), :mod:`glip.data.odvg` (ODVG JSONL), :mod:`glip.data.caption_only` (image +
caption JSONL), over :mod:`glip.data.base` (:class:`GroundingDataset`) and :mod:`glip.data.reading`.
:mod:`glip.data.synthetic` is the synthetic grounding world.

See ``docs/data.md`` for the accepted formats, how prompts are built from detection data, flips, the
bad-data policy and the few-shot protocol. The names below are loaded from their module on first access, so
that ``import glip.data.synthetic.vocabulary`` stays light.
"""

from __future__ import annotations

from glip.lazy import lazy_exports

#: public name -> the module that defines it (loaded lazily)
_EXPORTS: dict[str, str] = {
    "Batch": "types",
    "CaptionDataset": "caption_only",
    "CocoGroundingDataset": "coco",
    "DataError": "types",
    "EvalTransform": "transforms",
    "GroundingDataset": "base",
    "GroundingRecord": "types",
    "MDETRDataset": "mdetr",
    "MixedDataset": "mixed",
    "ODPrompt": "od_prompt",
    "ODVGDataset": "odvg",
    "Sample": "types",
    "TrainTransform": "transforms",
    "build_od_prompt": "od_prompt",
    "collate": "types",
    "few_shot_dataset": "few_shot",
    "few_shot_subset": "few_shot",
    "make_sample": "types",
    "read_image": "reading",
    "swap_left_right": "captions",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
