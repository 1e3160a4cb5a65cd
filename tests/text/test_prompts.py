"""Captions, tokenization and positive maps against the official GLIP functions (prompt_cases.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from glip.text.prompts import (
    build_chunked_detection_prompts,
    build_class_caption,
    build_demo_caption,
    build_detection_prompt,
    char_spans_to_token_positions,
    char_to_token,
    chunk_labels,
    clean_name,
    clean_name_od,
    create_positive_map,
    encoding_offsets,
    label_token_dict_from_spans,
    positive_map_to_label_token_dict,
)
from glip.text.tokenizer import PromptError, count_tokens, get_tokenizer, tokenize_captions

REFERENCE_DIR = Path(__file__).resolve().parents[3] / "shared" / "reference"
CASES_PATH = REFERENCE_DIR / "prompt_cases.json"
META_KEYS = {"name", "function", "input"}


def _load_cases() -> list[Any]:
    if not CASES_PATH.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{CASES_PATH} not found"), id="missing")]
    cases = json.loads(CASES_PATH.read_text(encoding="utf-8"))["cases"]
    return [pytest.param(case, id=case["name"]) for case in cases]


def _rows(positive_map: torch.Tensor) -> tuple[list[list[int]], list[float]]:
    """Non-zero columns of each row, and the (common) non-zero value of each row (0.0 for empty rows)."""
    nonzero = [torch.nonzero(row, as_tuple=True)[0].tolist() for row in positive_map]
    values = [float(row[idx[0]]) if idx else 0.0 for row, idx in zip(positive_map, nonzero)]
    for row, idx, value in zip(positive_map, nonzero, values):
        assert all(float(row[i]) == value for i in idx)  # the official normalisation is uniform per row
    return nonzero, values


def _label_dict(d: dict[int, list[int]]) -> dict[str, list[int]]:
    return {str(k): v for k, v in d.items()}


class _Checker:
    """Compares fields of a reference case and remembers which ones were checked."""

    def __init__(self, case: dict[str, Any]) -> None:
        self.case = case
        self.checked: set[str] = set(META_KEYS)

    def eq(self, key: str, value: Any) -> None:
        assert key in self.case, f"reference case has no {key!r}"
        assert value == self.case[key], f"{self.case['name']}: {key} differs"
        self.checked.add(key)

    def done(self) -> None:
        unchecked = set(self.case) - self.checked
        assert not unchecked, f"{self.case['name']}: fields not checked: {sorted(unchecked)}"


def _model_view(caption: str) -> tuple[list[int], list[str]]:
    """Ids/tokens the model sees: official truncate-at-256, no padding."""
    ids = (
        tokenize_captions([caption], max_length=256, pad_to_max=False, truncation=True).input_ids[0].tolist()
    )
    return ids, get_tokenizer().convert_ids_to_tokens(ids)


def _check_eval_case(case: dict[str, Any]) -> None:
    chk = _Checker(case)
    names, labels = case["input"]["label_names"], case["input"]["labels"]
    chk.eq("cleaned_names", [clean_name(n) for n in names])
    if "official_error" in case:
        # our default refuses the empty class by name; allow_empty reproduces the official crash as PromptError
        with pytest.raises(PromptError, match="empty after cleaning"):
            build_detection_prompt(names, labels)
        with pytest.raises(PromptError, match="OverflowError"):
            build_detection_prompt(names, labels, allow_empty=True)
        chk.checked.add("official_error")
        chk.done()
        return

    if case["labels_without_tokens"]:
        with pytest.raises(PromptError):
            build_detection_prompt(names, labels)
    prompt = build_detection_prompt(names, labels, allow_empty=bool(case["labels_without_tokens"]))
    chk.eq("caption", prompt.caption)
    chk.eq("char_spans", [list(s) for s in prompt.spans])
    chk.eq("positive_map_label_to_token", _label_dict(prompt.label_to_token))
    chk.eq("labels_without_tokens", list(prompt.labels_without_tokens))
    chk.eq("num_tokens_incl_special", min(prompt.num_tokens, 256))
    chk.eq("truncated_at_256", prompt.exceeds_max_len)
    ids, tokens = _model_view(prompt.caption)
    chk.eq("input_ids", ids)
    chk.eq("tokens", tokens)
    assert list(prompt.input_ids[:255]) == case["input_ids"][:255]  # untruncated ids share the prefix
    assert [p for p in prompt.names] == case["cleaned_names"]
    nonzero, values = _rows(prompt.positive_map())
    chk.eq("positive_map_row_nonzero", nonzero)
    chk.eq("positive_map_row_value", values)
    binary = prompt.positive_map(binary=True)
    assert _rows(binary)[0] == nonzero and set(binary.unique().tolist()) <= {0.0, 1.0}
    chk.done()


def _check_chunked_case(case: dict[str, Any]) -> None:
    chk = _Checker(case)
    names, size = case["input"]["label_names"], case["input"]["chunk_size"]
    labels = list(range(1, len(names) + 1))
    label_chunks = chunk_labels(labels, size)
    chk.eq("chunk_boundaries", [[c[0], c[-1]] for c in label_chunks])
    prompts = build_chunked_detection_prompts(names, labels, size)
    assert len(prompts) == len(case["chunks"])
    for prompt, ref in zip(prompts, case["chunks"]):
        sub = _Checker({"name": f"{case['name']}[{ref['first_label']}]", **ref})
        sub.eq("labels", list(prompt.labels))
        sub.eq("first_label", prompt.labels[0])
        sub.eq("last_label", prompt.labels[-1])
        sub.eq("caption", prompt.caption)
        sub.eq("char_spans", [list(s) for s in prompt.spans])
        sub.eq("positive_map_label_to_token", _label_dict(prompt.label_to_token))
        sub.eq("num_tokens_incl_special", prompt.num_tokens)
        sub.eq("labels_without_tokens", list(prompt.labels_without_tokens))
        assert not prompt.exceeds_max_len
        sub.done()
    chk.checked.add("chunks")
    chk.done()


def _check_demo_case(case: dict[str, Any]) -> None:
    chk = _Checker(case)
    prompt = build_demo_caption(case["input"]["names"])
    chk.eq("caption", prompt.caption)
    chk.eq("tokens_positive", [[list(s) for s in e] for e in prompt.tokens_positive])
    tokenized = get_tokenizer()([prompt.caption], return_tensors="pt")  # official: no truncation
    chk.eq("input_ids", tokenized["input_ids"][0].tolist())
    chk.eq("tokens", tokenized.tokens(0))
    positive_map = create_positive_map(tokenized, prompt.tokens_positive, caption=prompt.caption)
    nonzero, values = _rows(positive_map)
    chk.eq("positive_map_row_nonzero", nonzero)
    chk.eq("positive_map_row_value", values)
    chk.eq("positive_map_label_to_token", _label_dict(positive_map_to_label_token_dict(positive_map, plus=1)))
    chk.done()


def _check_grounding_case(case: dict[str, Any]) -> None:
    chk = _Checker(case)
    caption = case["input"]["caption"]
    spans = case["input"]["tokens_positive"]
    chk.eq("caption", caption)
    if "modulated_coco" in case["function"]:  # dataset path: tokenized with max_length=256, truncation
        tokenized = get_tokenizer()(caption, return_tensors="pt", max_length=256, truncation=True)
    else:  # demo path: tokenizer([caption]) without truncation
        tokenized = get_tokenizer()([caption], return_tensors="pt")
    chk.eq("input_ids", tokenized["input_ids"][0].tolist())
    chk.eq("tokens", tokenized.tokens(0))
    # the BatchEncoding (as official), the tokenizers.Encoding and the raw offsets all give the same map
    maps = [
        create_positive_map(source, spans, caption=caption)
        for source in (tokenized, tokenized.encodings[0], encoding_offsets(tokenized))
    ]
    assert all(torch.equal(maps[0], m) for m in maps[1:])
    nonzero, values = _rows(maps[0])
    chk.eq("positive_map_row_nonzero", nonzero)
    chk.eq("positive_map_row_value", values)
    binary = create_positive_map(tokenized, spans, binary=True)
    assert torch.equal(binary, maps[0].bool().float())  # what the training collate makes of the map
    chk.eq("positive_map_binary_rows", _rows(binary)[0])
    chk.eq("positive_map_label_to_token", _label_dict(positive_map_to_label_token_dict(maps[0], plus=1)))
    chk.done()


def _check_od_clean_case(case: dict[str, Any]) -> None:
    chk = _Checker(case)
    chk.eq("output", [clean_name_od(n) for n in case["input"]["names"]])
    chk.done()


@pytest.mark.parametrize("case", _load_cases())
def test_reference_case(case: dict[str, Any]) -> None:
    function = case["function"]
    if case["name"] == "od_to_grounding_clean_name":
        _check_od_clean_case(case)
    elif "CHUNKED_EVALUATION" in function:
        _check_chunked_case(case)
    elif function.startswith("engine/inference.py create_queries_and_maps"):
        _check_eval_case(case)
    elif "GLIPDemo" in function:
        _check_demo_case(case)
    elif "create_positive_map" in function:
        _check_grounding_case(case)
    else:
        pytest.fail(f"unknown reference case kind: {case['name']} ({function})")


# ------------------------------------------------------------------------------ hand-written expectations


@pytest.mark.parametrize(
    ("name", "tokens", "positions"),
    [
        ("toothbrush", ["tooth", "##brush"], [1, 2]),
        ("hair drier", ["hair", "dr", "##ier"], [1, 2, 3]),
        ("traffic light", ["traffic", "light"], [1, 2]),
        ("hair_drier", ["hair", "dr", "##ier"], [1, 2, 3]),
    ],
)
def test_single_class_tokens(name: str, tokens: list[str], positions: list[int]) -> None:
    prompt = build_detection_prompt([name])
    assert prompt.caption == name.replace("_", " ")
    assert get_tokenizer().convert_ids_to_tokens(list(prompt.input_ids)) == ["[CLS]", *tokens, "[SEP]"]
    assert prompt.label_to_token == {1: positions}
    pm = prompt.positive_map()
    assert pm.shape == (1, 256)
    expected = torch.zeros(256)
    expected[positions] = 1.0
    assert torch.equal(pm[0], expected / (expected.sum() + 1e-6))


def test_reference_caption() -> None:
    prompt = build_detection_prompt(["person", "bicycle", "traffic light", "hair drier"])
    assert prompt.caption == "person. bicycle. traffic light. hair drier"
    assert prompt.spans == ((0, 6), (8, 15), (17, 30), (32, 42))
    assert prompt.label_to_token == {1: [1], 2: [3], 3: [5, 6], 4: [8, 9, 10]}
    assert prompt.num_tokens == 12 and not prompt.exceeds_max_len and prompt.labels_without_tokens == ()
    assert positive_map_to_label_token_dict(prompt.positive_map(), plus=1) == prompt.label_to_token


def test_grounding_caption_explicit_spans() -> None:
    caption = "a man riding a horse next to a red car"
    spans = [[(2, 5)], [(15, 20)], [(31, 38), (2, 5)]]  # "man", "horse", "red car" + "man"
    tokenized = get_tokenizer()(caption)
    assert char_spans_to_token_positions(tokenized, [(2, 5), (15, 20), (31, 38)]) == [[2], [5], [9, 10]]
    pm = create_positive_map(tokenized, spans, caption=caption)
    nonzero, values = _rows(pm)
    assert nonzero == [[2], [5], [2, 9, 10]]
    assert values[2] == pytest.approx(1 / 3, rel=1e-5)
    assert label_token_dict_from_spans(tokenized, spans, [7, 8, 9]) == {7: [2], 8: [5], 9: [9, 10, 2]}


def test_span_retry_rules() -> None:
    caption = "two  dogs , and a cat."
    offsets = encoding_offsets(get_tokenizer()(caption))
    # start on spaces -> beg+2; end on a space -> end-2; inside a word -> the word's token
    assert char_spans_to_token_positions(offsets, [(3, 10), (0, 3), (18, 22), (19, 20)]) == [
        [2],
        [1],
        [6, 7],
        [6],
    ]
    # three spaces before the word: beg, beg+1, beg+2 all miss -> the span is skipped
    caption2 = "a   cat"
    assert char_spans_to_token_positions(get_tokenizer()(caption2), [(1, 7), (2, 7)]) == [[], [2]]
    # empty span between two dots: first token after last -> no tokens
    caption3 = "x. . y"
    assert char_spans_to_token_positions(get_tokenizer()(caption3), [(3, 3)]) == [[]]


def test_char_to_token_matches_fast_tokenizer() -> None:
    tokenizer = get_tokenizer()
    captions = [
        "Crème Brûlée, a  skateboarder's 7up_can (weapon)!  ",
        "person. bicycle. traffic light. hair drier",
        "R2D2 robot . ",
        " ".join(["antidisestablishmentarianism"] * 60),  # truncated below
    ]
    for caption in captions:
        enc = tokenizer(caption, max_length=64, truncation=True)
        offsets = encoding_offsets(enc)
        for i in range(len(caption) + 3):
            assert char_to_token(offsets, i) == enc.char_to_token(i), (caption, i)
    assert char_to_token(offsets, -1) is None


def test_clean_name_quirks() -> None:
    assert clean_name("bow_(weapon)") == "bow "
    assert clean_name("a_(b)_c_(d)") == "a "  # greedy
    assert clean_name("x___y") == "x  y"  # one pass of "  " -> " "
    assert clean_name("(empty)") == ""
    assert clean_name("Band_Aid") == "Band Aid"  # case kept (the tokenizer lower-cases)


def test_demo_and_class_caption() -> None:
    demo = build_demo_caption(["person", "hair_drier"])
    assert demo.caption == "person . hair_drier . " and demo.spans == ((0, 6), (9, 19))
    cp = build_class_caption(["person", "bow_(weapon)"])
    assert cp.caption == "person. bow " and cp.spans == ((0, 6), (8, 12)) and cp.names == ("person", "bow ")
    raw = build_class_caption(["a_b", "c"], " ", clean=False)
    assert raw.caption == "a_b c"


def test_caption_prompt_and_additional_labels() -> None:
    prompts = [
        {"prefix": "a ", "name": "dog", "suffix": " on grass"},
        {"prefix": "", "name": "cat", "suffix": ""},
    ]
    prompt = build_detection_prompt(["x", "y"], caption_prompt=prompts, additional_labels=["object"])
    assert prompt.caption == "a dog on grass. cat. object"
    assert prompt.spans == ((2, 5), (16, 19))
    assert prompt.label_to_token == {1: [2], 2: [6]}


def test_empty_names_errors() -> None:
    with pytest.raises(PromptError, match="empty"):
        build_detection_prompt([])
    with pytest.raises(PromptError, match=r"class 1 '\(empty\)'"):
        build_detection_prompt(["person", "(empty)", "car"])
    prompt = build_detection_prompt(["person", "(empty)", "car"], allow_empty=True)
    assert prompt.caption == "person. . car" and prompt.labels_without_tokens == (2,)
    assert prompt.label_to_token == {1: [1], 3: [4]}
    with pytest.raises(PromptError):
        build_demo_caption(["person", "  "])
    with pytest.raises(PromptError, match="OverflowError"):
        create_positive_map(get_tokenizer()("person"), [[(0, 0)]])
    with pytest.raises(PromptError, match="distinct"):
        build_detection_prompt(["a", "b"], [1, 1])
    with pytest.raises(PromptError):
        build_detection_prompt(["a", "b"], [1])


def test_span_errors() -> None:
    caption = "a red car"
    tokenized = get_tokenizer()(caption)
    with pytest.raises(PromptError, match="outside"):
        create_positive_map(tokenized, [[(2, 20)]], caption=caption)
    with pytest.raises(PromptError, match="outside"):
        char_spans_to_token_positions(tokenized, [(2, 10)], caption=caption)
    with pytest.raises(PromptError):
        char_spans_to_token_positions(tokenized, [(5, 3)])
    with pytest.raises(PromptError):
        label_token_dict_from_spans(tokenized, [[(-1, 3)]], [1])
    # without the caption, chars past the end map to no token (as official)
    assert char_spans_to_token_positions(tokenized, [(20, 25)]) == [[]]


def test_positive_map_truncates_columns() -> None:
    names = [f"class{i}" for i in range(100)]
    prompt = build_detection_prompt(names)
    assert prompt.exceeds_max_len and prompt.num_tokens > 256
    assert max(max(p) for p in prompt.label_to_token.values()) >= 256  # the eval dict is not truncated
    pm = prompt.positive_map()
    for label, positions in prompt.label_to_token.items():
        row = pm[label - 1]
        assert torch.nonzero(row, as_tuple=True)[0].tolist() == [p for p in positions if p < 256]
        # labels touching position 255 ([SEP] in the model input) or beyond are reported as cut off
        assert (label in prompt.labels_beyond_max_len) == (max(positions) >= 255)
    assert prompt.labels_beyond_max_len


def test_chunk_labels() -> None:
    assert chunk_labels(list(range(1, 101)), 40) == [
        list(range(1, 41)),
        list(range(41, 81)),
        list(range(81, 101)),
    ]
    assert chunk_labels([3, 1], -1) == [[3, 1]]
    with pytest.raises(PromptError):
        chunk_labels([1], 0)
    prompts = build_chunked_detection_prompts(["c", "a", "b"], [30, 10, 20], 2)
    assert [p.labels for p in prompts] == [(10, 20), (30,)]
    assert prompts[0].caption == "a. b" and prompts[1].label_to_token == {30: [1]}


# ------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_is_bert_base_uncased() -> None:
    tokenizer = get_tokenizer()
    assert tokenizer is get_tokenizer()
    assert len(tokenizer) == 30522 and tokenizer.model_max_length == 512
    assert [
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
    ] == [
        0,
        100,
        101,
        102,
    ]
    assert tokenizer("crème brûlée")["input_ids"] == tokenizer("creme brulee")["input_ids"]
    assert tokenizer.tokenize("Crème Brûlée") == ["cr", "##eme", "br", "##ule", "##e"]
    assert tokenizer("person. dog")["input_ids"] == [101, 2711, 1012, 3899, 102]


def test_tokenize_captions() -> None:
    out = tokenize_captions(["person. dog", "a cat"])
    assert out.input_ids.shape == (2, 256) and out.input_ids.dtype == torch.int64
    assert out.input_ids[0, :5].tolist() == [101, 2711, 1012, 3899, 102]
    assert out.attention_mask[0].sum() == 5 and out.attention_mask[1].sum() == 4
    assert out.num_tokens == [5, 4] and out.truncated == [False, False]
    assert set(out.as_dict()) == {"input_ids", "attention_mask"}
    assert out.encodings[0].char_to_token(8) == 3
    short = tokenize_captions(["person. dog", "a cat"], pad_to_max=False)
    assert short.input_ids.shape == (2, 5) and short.input_ids[1, -1] == 0


def test_tokenize_captions_errors_and_truncation() -> None:
    long_caption = ". ".join(f"class{i}" for i in range(100))
    n = count_tokens(long_caption)
    assert n > 256
    with pytest.raises(PromptError, match=f"{n} tokens"):
        tokenize_captions([long_caption])
    out = tokenize_captions([long_caption], truncation=True)
    assert out.input_ids.shape == (1, 256) and out.input_ids[0, -1] == 102 and out.attention_mask.all()
    assert out.truncated == [True] and out.num_tokens == [n]
    for bad in ["", "   ", " . , ;", "..."]:
        with pytest.raises(PromptError):
            tokenize_captions([bad])
    with pytest.raises(PromptError):
        tokenize_captions([])


# ------------------------------------------------------------------- class_prompts / caption_prompt


def _long_names(count: int) -> list[str]:
    first = ["red", "small", "wooden", "striped", "plastic", "metal", "paper", "glass", "green", "old"]
    second = ["toy", "kitchen", "garden", "office", "sports", "music", "bath", "travel", "baby", "farm"]
    third = ["box", "chair", "lamp", "basket", "bottle", "brush", "bag", "clock", "drum", "fan"]
    return [f"{a} {b} {c}" for a in first for b in second for c in third][:count]


def test_class_prompts_none_packs_as_many_as_fit():
    from glip.text.prompts import Prompt, class_prompts

    names = _long_names(300)
    prompts = class_prompts(names)
    assert len(prompts) > 1 and all(isinstance(p, Prompt) for p in prompts)
    assert [lab for p in prompts for lab in p.labels] == list(range(1, 301))
    assert [n for p in prompts for n in p.names] == names
    for index, prompt in enumerate(prompts):
        tokens = count_tokens(prompt.caption)
        assert tokens <= 256
        if index + 1 < len(prompts):  # greedy: the next class would not have fitted
            grown = build_detection_prompt(list(prompt.names) + [prompts[index + 1].names[0]])
            assert grown.num_tokens > 256
    assert len(class_prompts(names[:3])) == 1


def test_class_prompts_k_is_the_official_chunking():
    from glip.text.prompts import class_prompts

    names = ["person", "bicycle", "traffic_light", "bow_(weapon)", "hair drier"]
    labels = [10, 20, 30, 40, 50]
    ours = class_prompts(names, 2, labels=labels)
    official = build_chunked_detection_prompts(names, labels, 2)
    assert [p.labels for p in ours] == [p.labels for p in official] == [(10, 20), (30, 40), (50,)]
    assert [p.caption for p in ours] == [p.caption for p in official]
    assert [p.label_to_tokens for p in ours] == [p.label_to_token for p in official]
    assert [p.labels for p in class_prompts(names, 1)] == [(1,), (2,), (3,), (4,), (5,)]


def test_class_prompts_minus_one_is_one_prompt_or_an_error():
    from glip.text.prompts import class_prompts

    [one] = class_prompts(["cat", "dog", "red ball"], -1)
    assert one.caption == "cat. dog. red ball" and one.labels == (1, 2, 3)
    assert one.names == ("cat", "dog", "red ball")
    with pytest.raises(PromptError, match="tokens > 256: use a smaller chunk size"):
        class_prompts(_long_names(300), -1)
    # the official builder keeps its truncating -1 (one prompt, a warning) for reproductions
    assert len(build_chunked_detection_prompts(_long_names(300), chunk_size=-1)) == 1


@pytest.mark.parametrize("size", [0, -2, -40])
def test_class_prompts_bad_chunk_size(size):
    from glip.text.prompts import class_prompts

    with pytest.raises(
        PromptError, match="chunk_size must be a positive number.*-1: all classes in one prompt"
    ):
        class_prompts(["cat"], size)


def test_class_prompts_caption_prompt():
    from glip.text.prompts import class_prompts

    entries = [
        {"prefix": "a ", "name": "red", "suffix": " thing"},
        {"prefix": "", "name": "dog", "suffix": ""},
    ]
    [prompt] = class_prompts(["x", "y"], caption_prompt=entries)
    assert prompt.caption == "a red thing. dog"
    expected = build_detection_prompt(["x", "y"], caption_prompt=entries)
    assert prompt.label_to_tokens == expected.label_to_token
    with pytest.raises(PromptError, match="caption_prompt has 1 entries for 2 classes"):
        class_prompts(["x", "y"], caption_prompt=entries[:1])


def test_caption_prompt_phrases_and_spans():
    from glip.text.prompts import Prompt, caption_prompt

    prompt = caption_prompt("a cat and a dog and a cat", phrases=["cat", "dog"])
    assert prompt.labels == (1, 2) and prompt.names == ("cat", "dog")
    assert len(prompt.label_to_tokens[1]) == 2  # both occurrences of "cat"
    by_span = caption_prompt("a cat and a dog", spans=[[(2, 5)], [(12, 15)]])
    assert by_span.names == ("cat", "dog") and by_span.label_to_tokens == {1: [2], 2: [5]}
    with pytest.raises(PromptError, match="does not fit the caption"):
        caption_prompt("a cat", spans=[[(0, 50)]])
    with pytest.raises(PromptError, match="2 labels for 1 names"):
        Prompt("a cat", {1: [2]}, (1, 2), ("cat",))
