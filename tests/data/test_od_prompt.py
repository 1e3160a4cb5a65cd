"""Detection -> grounding prompts (official od_to_grounding): positives, negatives, 256-token limit."""

from __future__ import annotations

import numpy as np
import pytest

from glip.data import CocoGroundingDataset, build_od_prompt
from glip.data.od_prompt import class_token_counts
from glip.text.prompts import clean_name_od
from glip.text.tokenizer import count_tokens


def _vocab(names):
    cleaned = {i + 1: clean_name_od(n) for i, n in enumerate(names)}
    return list(cleaned), cleaned, class_token_counts(cleaned)


def _check(prompt, names, positives):
    for label, (beg, end) in prompt.spans.items():
        assert prompt.caption[beg:end] == names[label]
    assert list(prompt.spans) == list(prompt.labels)
    assert prompt.caption == ". ".join(names[lab] for lab in prompt.labels)
    assert set(prompt.positives) <= set(positives)
    assert not set(prompt.labels) - set(prompt.positives) & set(positives)  # a positive is never a negative
    assert count_tokens(prompt.caption) <= 256


def test_positives_negatives_and_determinism(vocabulary_1203):
    labels, names, counts = _vocab(vocabulary_1203)
    positives = [5, 17, 17, 600, 1203]
    kwargs = {"num_negatives": 85, "shuffle": True}
    prompt = build_od_prompt(positives, labels, names, counts, rng=np.random.default_rng(3), **kwargs)
    _check(prompt, names, positives)
    assert set(prompt.positives) == {5, 17, 600, 1203}  # every positive class is in the caption
    negatives = set(prompt.labels) - set(positives)
    assert 0 < len(negatives) <= 85
    again = build_od_prompt(positives, labels, names, counts, rng=np.random.default_rng(3), **kwargs)
    other = build_od_prompt(positives, labels, names, counts, rng=np.random.default_rng(4), **kwargs)
    assert again == prompt
    assert other.caption != prompt.caption


def test_1203_classes_all_negatives_fit_in_256_tokens(vocabulary_1203):
    labels, names, counts = _vocab(vocabulary_1203)
    prompt = build_od_prompt([1, 2, 3], labels, names, counts, num_negatives=-1, rng=np.random.default_rng(0))
    _check(prompt, names, [1, 2, 3])
    assert set(prompt.positives) == {1, 2, 3}
    assert count_tokens(prompt.caption) > 200  # negatives were added up to the budget, no further


def test_positive_overflow_drops_positives_and_no_negatives(vocabulary_1203):
    labels, names, counts = _vocab(vocabulary_1203)
    positives = list(range(1, 400))
    prompt = build_od_prompt(positives, labels, names, counts, num_negatives=85, rng=np.random.default_rng(1))
    _check(prompt, names, positives)
    assert prompt.dropped_positives and set(prompt.positives) | set(prompt.dropped_positives) == set(
        positives
    )
    assert set(prompt.labels) == set(prompt.positives)  # no room left for negatives
    assert sum(counts[lab] for lab in prompt.positives) <= 254


def test_deterministic_mode_is_category_order():
    labels, names, counts = _vocab(["person", "bicycle", "traffic_light", "bow_(weapon)"])
    prompt = build_od_prompt([3], labels, names, counts, num_negatives=-1, shuffle=False)
    assert prompt.caption == "person. bicycle. traffic light. bow "
    assert prompt.spans == {1: (0, 6), 2: (8, 15), 3: (17, 30), 4: (32, 36)}
    few = build_od_prompt(
        [3], labels, names, counts, num_negatives=1, shuffle=False, rng=np.random.default_rng(0)
    )
    assert 3 in few.labels and len(few.labels) == 2 and list(few.labels) == sorted(few.labels)


def test_never_empty_caption():
    labels, names, counts = _vocab(["person", "bicycle"])
    prompt = build_od_prompt([], labels, names, counts, num_negatives=0, rng=np.random.default_rng(0))
    assert len(prompt.labels) == 1 and prompt.caption in ("person", "bicycle")


def test_dataset_prompts_per_epoch(tmp_path, helpers, vocabulary_1203):
    data = helpers.coco_dict(num_images=2)
    data["categories"] = [{"id": i + 1, "name": n} for i, n in enumerate(vocabulary_1203)]
    for i, image in enumerate(data["images"]):
        helpers.write_image(tmp_path / image["file_name"], image["width"], image["height"], seed=i)
    dataset = CocoGroundingDataset(data, tmp_path, None, num_negatives=85, seed=7, on_error="raise")
    first = [dataset[i].caption for i in range(2)]
    assert first == [dataset[i].caption for i in range(2)]  # same epoch -> same prompts
    dataset.set_epoch(1)
    second = [dataset[i].caption for i in range(2)]
    assert second != first
    dataset.set_epoch(0)
    assert [dataset[i].caption for i in range(2)] == first
    for i in range(2):
        sample = dataset[i]
        caption = sample.caption
        person, light = clean_name_od(vocabulary_1203[0]), clean_name_od(vocabulary_1203[8])
        assert person in caption.split(". ") and light in caption.split(". ")
        assert count_tokens(caption) <= 256
        assert sample.target.labels.tolist() == [1, 9]  # 1 + position in the categories list
        assert bool((sample.target.token_map.sum(1) > 0).all())


@pytest.mark.parametrize("shuffle", [True, False])
def test_label_numbering_and_spans(coco_dir, eval_transform, shuffle):
    root, data = coco_dir
    dataset = CocoGroundingDataset(data, root, eval_transform, num_negatives=-1, shuffle_classes=shuffle)
    assert dataset.label_to_category_id == {1: 1, 2: 5, 3: 9}
    record = dataset.record(0)
    assert set(record.caption.split(". ")) == {"person", "bicycle", "traffic light"}
    for label, spans in zip(record.labels.tolist(), record.tokens_positive):
        beg, end = spans[0]
        assert record.caption[beg:end] == dataset.class_names[label]
    if not shuffle:
        assert record.caption == "person. bicycle. traffic light"
