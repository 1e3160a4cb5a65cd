"""Self-training: a teacher GLIP pseudo-labels image-caption pairs; a student trains on them (``docs/self-training.md``)."""

from glip.selftrain.pseudo_label import (
    PseudoLabelConfig,
    RunSummary,
    merge_shards,
    output_paths,
    pseudo_label,
    read_lines,
    resolve_image,
    run_shards,
)
from glip.selftrain.scoring import score_pseudo_labels
from glip.selftrain.stats import PseudoLabelStats, save_score_histogram
from glip.selftrain.teacher import GroundingPrompt, PhraseBoxes, Teacher, TeacherConfig, TeacherOutput

__all__ = [
    "GroundingPrompt",
    "PhraseBoxes",
    "PseudoLabelConfig",
    "PseudoLabelStats",
    "RunSummary",
    "Teacher",
    "TeacherConfig",
    "TeacherOutput",
    "merge_shards",
    "output_paths",
    "pseudo_label",
    "read_lines",
    "resolve_image",
    "run_shards",
    "save_score_histogram",
    "score_pseudo_labels",
]
