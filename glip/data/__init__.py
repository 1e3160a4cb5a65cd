"""Training data for GLIP: detection and grounding datasets -> :class:`Sample` -> :func:`collate` -> :class:`Batch`.

See ``docs/data.md`` for the accepted formats, how prompts are built from detection data, flips, the
bad-data policy and the few-shot protocol.
"""

from glip.data.base import GroundingDataset
from glip.data.caption_only import CaptionDataset
from glip.data.captions import swap_left_right
from glip.data.coco import CocoGroundingDataset
from glip.data.few_shot import few_shot_dataset, few_shot_subset
from glip.data.mdetr import MDETRDataset
from glip.data.mixed import MixedDataset
from glip.data.od_prompt import ODPrompt, build_od_prompt
from glip.data.odvg import ODVGDataset
from glip.data.reading import read_image
from glip.data.transforms import EvalTransform, TrainTransform
from glip.data.types import Batch, DataError, GroundingRecord, Sample, collate, make_sample

__all__ = [
    "Batch",
    "CaptionDataset",
    "CocoGroundingDataset",
    "DataError",
    "EvalTransform",
    "GroundingDataset",
    "GroundingRecord",
    "MDETRDataset",
    "MixedDataset",
    "ODPrompt",
    "ODVGDataset",
    "Sample",
    "TrainTransform",
    "build_od_prompt",
    "collate",
    "few_shot_dataset",
    "few_shot_subset",
    "make_sample",
    "read_image",
    "swap_left_right",
]
