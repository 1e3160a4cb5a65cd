"""Detection annotations -> a grounding caption, as official GLIP trains on detection data.

Official sources (microsoft/GLIP ``data/datasets/od_to_grounding.py``, ``modulated_coco.py`` ``CocoGrounding``):

* ``convert_od_to_grounding_simple`` (COCO / ODinW fine-tuning): every class of the dataset, in category
  order (``DISABLE_SHUFFLE``) or shuffled, joined with ``". "``, no trailing separator.
* ``check_for_positive_overflow`` + ``convert_object_detection_to_grounding_optimized_for_od`` with
  ``RANDOM_SAMPLE_NEG`` (Objects365 / LVIS pre-training): the image's positive classes (shuffled; those that
  do not fit in 254 tokens of ``"name. "`` are dropped together with their boxes) plus up to N negative classes
  sampled without replacement from *all* classes (positives drawn this way are discarded, so usually fewer
  than N remain), shuffled and pre-screened to the tokens left, then everything shuffled together.

:func:`build_od_prompt` does both (``num_negatives=-1`` means "all other classes"). Differences from the
official code: the per-sample randomness comes from a seeded ``numpy`` generator (reproducible per
seed / epoch / index) instead of the global ``random`` / ``np.random`` state; a positive class dropped for
overflow is never used as a negative (officially it can be, making its objects background); the final caption
is tokenized and, should it still exceed ``max_len`` tokens, negatives and then positives are removed until it
fits; an image left with no class at all gets one negative class so that the caption is never empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from glip.text.prompts import EVAL_SEPARATOR, Span
from glip.text.tokenizer import MAX_QUERY_LEN, get_tokenizer

__all__ = ["ODPrompt", "build_od_prompt", "class_token_counts"]


@dataclass(frozen=True)
class ODPrompt:
    """caption: the prompt; labels: the labels in caption order; spans: label -> char span of its name;
    positives: the positive labels kept; dropped_positives: positive labels that did not fit."""

    caption: str
    labels: tuple[int, ...]
    spans: dict[int, Span]
    positives: tuple[int, ...]
    dropped_positives: tuple[int, ...]


def class_token_counts(names: Mapping[int, str], separator: str = EVAL_SEPARATOR) -> dict[int, int]:
    """Tokens (no [CLS]/[SEP]) of ``name + separator`` per label: the official per-class cost
    (``tokenizer.tokenize(clean_name(name) + ". ")``)."""
    labels = list(names)
    if not labels:
        return {}
    encoded = get_tokenizer()([names[lab] + separator for lab in labels], add_special_tokens=False)
    return {lab: len(ids) for lab, ids in zip(labels, encoded["input_ids"])}


def _caption(labels: Sequence[int], names: Mapping[int, str], separator: str) -> tuple[str, dict[int, Span]]:
    caption = ""
    spans: dict[int, Span] = {}
    for i, label in enumerate(labels):
        start = len(caption)
        caption += names[label]
        spans[label] = (start, len(caption))
        if i != len(labels) - 1:
            caption += separator
    return caption, spans


def _num_tokens(caption: str) -> int:
    return len(get_tokenizer()(caption, truncation=False)["input_ids"])


def build_od_prompt(
    positive_labels: Sequence[int],
    all_labels: Sequence[int],
    names: Mapping[int, str],
    token_counts: Mapping[int, int],
    *,
    num_negatives: int = 85,
    shuffle: bool = True,
    rng: np.random.Generator | None = None,
    max_len: int = MAX_QUERY_LEN,
    separator: str = EVAL_SEPARATOR,
) -> ODPrompt:
    """Caption for one detection image.

    Args:
        positive_labels: labels of the image's boxes (repeats allowed).
        all_labels: the vocabulary in category order.
        names: label -> cleaned class name (``clean_name_od``).
        token_counts: label -> tokens of ``name + separator`` (:func:`class_token_counts`).
        num_negatives: negative classes to sample (-1: all classes that are not positive).
        shuffle: shuffle positives, negatives and the final order (False: category order everywhere, the
            official ``DISABLE_SHUFFLE``; negatives are then still *sampled* with ``rng`` when
            ``0 <= num_negatives < len(all_labels)``).
        rng: per-sample generator (needed when shuffling or sampling).
        max_len: the model's text length; the caption incl. [CLS]/[SEP] never exceeds it.
        separator: ``DATASETS.SEPARATION_TOKENS`` (". ").

    Returns:
        :class:`ODPrompt`. Boxes whose label is not in ``positives`` must be dropped by the caller.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    order = {label: i for i, label in enumerate(all_labels)}
    budget = max_len - 2  # official: MAX_QUERY_LEN - 2, room for [CLS] and [SEP]

    positives = sorted(set(int(lab) for lab in positive_labels), key=order.__getitem__)
    if shuffle:
        positives = [positives[i] for i in rng.permutation(len(positives))]
    kept_positives: list[int] = []
    length = 0
    for label in positives:  # official check_for_positive_overflow (stops at the first that does not fit)
        length += token_counts[label]
        if length > budget:
            break
        kept_positives.append(label)
    positive_length = sum(token_counts[lab] for lab in kept_positives)
    dropped = tuple(lab for lab in positives if lab not in set(kept_positives))

    positive_set = set(positives)
    if num_negatives < 0 or num_negatives >= len(all_labels):
        candidates = list(all_labels)
    elif num_negatives == 0:
        candidates = []
    else:
        chosen = rng.choice(len(all_labels), size=num_negatives, replace=False)
        candidates = [all_labels[int(i)] for i in chosen]
    negatives = [lab for lab in candidates if lab not in positive_set]
    if shuffle:
        negatives = [negatives[i] for i in rng.permutation(len(negatives))]
    else:
        negatives.sort(key=order.__getitem__)
    remaining = budget - positive_length
    screened: list[int] = []
    for label in negatives:  # official pre-screen: keep while tokens remain
        remaining -= token_counts[label]
        if remaining <= 0:
            break
        screened.append(label)
    negatives = screened

    if not kept_positives and not negatives:  # never an empty caption
        pool = [lab for lab in all_labels if lab not in positive_set] or list(all_labels)
        negatives = [pool[int(rng.integers(len(pool)))] if shuffle else pool[0]]

    while True:
        labels = negatives + kept_positives
        if shuffle:
            labels = [labels[i] for i in rng.permutation(len(labels))]
        else:
            labels.sort(key=order.__getitem__)
        caption, spans = _caption(labels, names, separator)
        if _num_tokens(caption) <= max_len or len(labels) <= 1:
            break
        if negatives:
            negatives = negatives[:-1]
        else:
            dropped = dropped + (kept_positives[-1],)
            kept_positives = kept_positives[:-1]
    return ODPrompt(
        caption=caption,
        labels=tuple(labels),
        spans=spans,
        positives=tuple(kept_positives),
        dropped_positives=dropped,
    )
