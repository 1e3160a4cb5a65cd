"""Captions from class lists, char spans -> token positions, and positive maps, as official GLIP does them.

Vocabulary used throughout:

* a *span* is a ``(beg, end)`` character range of the caption, ``end`` exclusive;
* ``tokens_positive`` is a list over entities (classes / phrases) of lists of spans (an entity may have
  several spans);
* token positions count the leading [CLS], so the first word token is position 1;
* a *positive map* is a (N entities, max_len) float tensor, row j marking the tokens of entity j;
* a *label -> token dict* maps a label id to the list of its token positions (what the model's
  ``positive_map`` argument and the score aggregation use).

Reproduced official sources (microsoft/GLIP): ``engine/inference.py`` (``clean_name``,
``create_queries_and_maps``, ``create_positive_dict``, ``chunks``,
``create_positive_map_label_to_token_from_positive_map``), ``engine/predictor_glip.py`` (list-input caption,
``create_positive_map``), ``data/datasets/modulated_coco.py`` (``create_positive_map``),
``data/datasets/od_to_grounding.py`` (``clean_name``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from glip.text.tokenizer import MAX_QUERY_LEN, PromptError, get_tokenizer

logger = logging.getLogger(__name__)

__all__ = [
    "ClassPrompt",
    "DetectionPrompt",
    "Prompt",
    "PromptError",
    "Span",
    "build_chunked_detection_prompts",
    "build_class_caption",
    "build_demo_caption",
    "build_detection_prompt",
    "caption_prompt",
    "char_spans_to_token_positions",
    "char_to_token",
    "chunk_labels",
    "class_prompts",
    "clean_name",
    "clean_name_od",
    "create_positive_map",
    "encoding_offsets",
    "label_token_dict_from_spans",
    "pack_by_tokens",
    "positive_map_to_label_token_dict",
]

Span = tuple[int, int]
T = TypeVar("T")

#: separator of ``DATASETS.SEPARATION_TOKENS`` in the GLIP-T / GLIP-L configs (evaluation captions).
EVAL_SEPARATOR: str = ". "
#: separator the official demo (``GLIPDemo``) appends after *every* name of a list input.
DEMO_SEPARATOR: str = " . "
#: ``TEST.CHUNKED_EVALUATION`` of the official LVIS evaluation command.
LVIS_CHUNK_SIZE: int = 40

# greedy: "a_(b)_c_(d)" loses everything from the first "(" to the last ")"
_PARENTHESES = re.compile(r"\(.*\)")


# --------------------------------------------------------------------------------------------- names


def clean_name(name: str) -> str:
    """Official ``engine/inference.py`` ``clean_name``.

    Removes ``(...)`` **greedily** (first "(" to last ")"), then "_" -> " ", then *one* pass of
    "  " -> " " (so three spaces become two). Not stripped: "bow_(weapon)" -> "bow " keeps its trailing space.
    """
    name = _PARENTHESES.sub("", name)
    name = name.replace("_", " ")
    return name.replace("  ", " ")


def clean_name_od(name: str) -> str:
    """Official ``data/datasets/od_to_grounding.py`` ``clean_name`` (used to build training captions from
    detection data). In the official code it is character-for-character the same function as
    :func:`clean_name`; kept separate so the two call sites stay traceable."""
    return clean_name(name)


def _check_names(names: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        raise PromptError("give a list of class names, not a single string")
    names = list(names)
    if not names:
        raise PromptError("the list of class names is empty")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise PromptError(f"class name {i} must be a str, got {type(name).__name__}")
    return names


# ------------------------------------------------------------------------------------------ captions


@dataclass(frozen=True)
class ClassPrompt:
    """A caption made of class names.

    caption: the text fed to the tokenizer.
    spans:   (N,) one ``(beg, end)`` char span per class (end exclusive), over the text of that class.
    names:   (N,) the class texts as they appear in the caption (cleaned or not, see the builder).
    """

    caption: str
    spans: tuple[Span, ...]
    names: tuple[str, ...]

    @property
    def tokens_positive(self) -> list[list[Span]]:
        """``[[span] for span in spans]``: one single-span entity per class."""
        return [[span] for span in self.spans]


def _empty_name_error(original: str, index: int, text: str, what: str) -> PromptError:
    return PromptError(
        f"class {index} {original!r} is empty{what} ({text!r}): it would get no tokens (official GLIP "
        "silently gives it none, or crashes if it is the first class). Rename it, or pass allow_empty=True "
        "to reproduce the official output"
    )


def build_class_caption(
    names: Sequence[str],
    separator: str = EVAL_SEPARATOR,
    *,
    clean: bool = True,
    allow_empty: bool = False,
    caption_prompt: Sequence[Mapping[str, str]] | None = None,
    additional_labels: Sequence[str] | None = None,
) -> ClassPrompt:
    """Evaluation caption of official ``create_queries_and_maps``.

    Each name is cleaned with :func:`clean_name` (``clean=True``), the names are joined with ``separator``
    (GLIP-T/L: ". ") with **no trailing separator**, e.g. "person. bicycle. traffic light", and each class
    gets one span over its cleaned name only. A cleaned name keeps any leading/trailing space, which then
    lies inside the caption and the span ("bow_(weapon)" -> "bow . ...", span over "bow ").

    Args:
        names: N class names.
        separator: ``DATASETS.SEPARATION_TOKENS``.
        clean: apply :func:`clean_name` (official: always).
        allow_empty: with False a name that is empty/blank after cleaning raises :class:`PromptError`; with
            True it is kept as the official code does (an empty span, e.g. ". ." in the caption).
        caption_prompt: optional ``DATASETS.CAPTION_PROMPT``, N dicts with "prefix", "name", "suffix": the
            caption gets ``prefix + name + suffix`` per class and the span covers ``name`` only. As official,
            ``name`` replaces the class name and is used verbatim (not cleaned).
        additional_labels: optional ``DATASETS.SUPRESS_QUERY`` texts appended after the classes (each
            preceded by ``separator``); they get no span.

    Returns:
        :class:`ClassPrompt` with N spans.
    """
    names = _check_names(names)
    if caption_prompt is not None and len(caption_prompt) != len(names):
        raise PromptError(f"caption_prompt has {len(caption_prompt)} entries for {len(names)} classes")
    texts = [clean_name(n) if clean else n for n in names]
    caption = ""
    spans: list[Span] = []
    entity_texts: list[str] = []
    for i, text in enumerate(texts):
        if caption_prompt is not None:
            caption += caption_prompt[i]["prefix"]
            text = caption_prompt[i]["name"]
        if not text.strip() and not allow_empty:
            raise _empty_name_error(names[i], i, text, " after cleaning" if clean else "")
        beg = len(caption)
        caption += text
        spans.append((beg, len(caption)))
        entity_texts.append(text)
        if caption_prompt is not None:
            caption += caption_prompt[i]["suffix"]
        if i != len(texts) - 1:
            caption += separator
    if additional_labels is not None:  # official: even an empty list adds a trailing separator
        caption += separator + separator.join(additional_labels)
    return ClassPrompt(caption=caption, spans=tuple(spans), names=tuple(entity_texts))


def build_demo_caption(names: Sequence[str], *, allow_empty: bool = False) -> ClassPrompt:
    """Caption of the official demo (``GLIPDemo.compute_prediction``) for a *list* of names.

    Names are **not** cleaned and " . " is appended after **every** name, trailing one included:
    ["person", "hair drier"] -> "person . hair drier . ", spans [(0, 6), (9, 19)].
    ``allow_empty`` as in :func:`build_class_caption`.
    """
    names = _check_names(names)
    caption = ""
    spans: list[Span] = []
    for i, name in enumerate(names):
        if not name.strip() and not allow_empty:
            raise _empty_name_error(name, i, name, "")
        spans.append((len(caption), len(caption) + len(name)))
        caption += name + DEMO_SEPARATOR
    return ClassPrompt(caption=caption, spans=tuple(spans), names=tuple(names))


# ------------------------------------------------------------------------------- chars -> tokens


def encoding_offsets(encoding: Any) -> list[Span]:
    """Per-token ``(start, end)`` char offsets of one tokenized caption.

    Accepts a ``tokenizers.Encoding``, a fast-tokenizer ``BatchEncoding`` of a *single* caption (as the
    official code passes), or the offsets themselves (a sequence of pairs or an (L, 2) tensor, e.g.
    ``offset_mapping``). Special and padding tokens have (0, 0).
    """
    encodings = getattr(encoding, "encodings", None)
    if encodings is not None:  # transformers BatchEncoding from a fast tokenizer
        if len(encodings) != 1:
            raise PromptError(
                f"the BatchEncoding holds {len(encodings)} captions; pass one (encoding.encodings[i])"
            )
        return [(int(a), int(b)) for a, b in encodings[0].offsets]
    offsets = getattr(encoding, "offsets", None)
    if offsets is not None:  # tokenizers.Encoding
        return [(int(a), int(b)) for a, b in offsets]
    if isinstance(encoding, torch.Tensor):
        encoding = encoding.reshape(-1, 2).tolist()
    return [(int(a), int(b)) for a, b in encoding]


def char_to_token(offsets: Sequence[Span], char_index: int) -> int | None:
    """Index of the first token whose offsets contain ``char_index`` (``start <= c < end``), else None.

    Same result as the fast tokenizers' ``char_to_token`` for a single sequence: None for whitespace, for
    characters the normaliser dropped, and past the (possibly truncated) end. Negative indices give None
    here (the official ``char_to_token`` raises OverflowError; callers decide).
    """
    if char_index < 0:
        return None
    for position, (start, end) in enumerate(offsets):
        if start <= char_index < end:
            return position
    return None


def _span_token_range(offsets: Sequence[Span], beg: int, end: int) -> tuple[int, int] | None:
    """Official char span -> inclusive token range, or None when the span is skipped.

    beg_pos = c2t(beg), else c2t(beg+1), else c2t(beg+2); end_pos = c2t(end-1), else c2t(end-2), else
    c2t(end-3); skip when either is still None. ``beg_pos > end_pos`` gives an empty range (kept, not None).
    """
    if beg < 0 or end - 1 < 0:
        # official: tokenized.char_to_token(-1) -> OverflowError("can't convert negative int to unsigned")
        raise PromptError(
            f"span ({beg}, {end}) starts before the caption or is empty at its very start; the official code "
            "crashes here (char_to_token of a negative index: OverflowError)"
        )
    beg_pos = char_to_token(offsets, beg)
    if beg_pos is None:
        beg_pos = char_to_token(offsets, beg + 1)
        if beg_pos is None:
            beg_pos = char_to_token(offsets, beg + 2)
    end_pos = char_to_token(offsets, end - 1)
    if end_pos is None:
        end_pos = char_to_token(offsets, end - 2)  # negative -> None, as the official try/except
        if end_pos is None:
            end_pos = char_to_token(offsets, end - 3)
    if beg_pos is None or end_pos is None:
        return None
    return beg_pos, end_pos


def _check_span(span: Sequence[int], caption: str | None) -> Span:
    if len(span) != 2:
        raise PromptError(f"a span is (beg, end), got {tuple(span)!r}")
    beg, end = int(span[0]), int(span[1])
    if beg < 0 or end < beg:
        raise PromptError(f"invalid span ({beg}, {end}): need 0 <= beg <= end")
    if caption is not None and end > len(caption):
        raise PromptError(f"span ({beg}, {end}) lies outside the caption ({len(caption)} characters)")
    return beg, end


def char_spans_to_token_positions(
    offsets_or_encoding: Any, spans: Sequence[Sequence[int]], *, caption: str | None = None
) -> list[list[int]]:
    """Token positions of each char span, with the official retry rules.

    For a span (beg, end): the first token is that of char beg, else beg+1, else beg+2; the last token is
    that of char end-1, else end-2, else end-3 (so spans may start/end on spaces, punctuation-free edges,
    or a trailing space as in "bow "); if either is still not found the span gets no tokens. Tokens
    first..last *inclusive* are returned (can be empty when first > last, e.g. an empty span).

    Args:
        offsets_or_encoding: see :func:`encoding_offsets` (the tokenization of the caption; if truncated,
            chars past the cut map to no token).
        spans: S spans ``(beg, end)``, end exclusive.
        caption: when given, spans must lie inside it.

    Returns:
        S lists of token positions ([CLS] = 0).

    Raises:
        PromptError: for spans with beg < 0, end < beg, end == 0 (the official code crashes) or outside
            ``caption``.
    """
    offsets = encoding_offsets(offsets_or_encoding)
    positions: list[list[int]] = []
    for span in spans:
        beg, end = _check_span(span, caption)
        token_range = _span_token_range(offsets, beg, end)
        positions.append([] if token_range is None else list(range(token_range[0], token_range[1] + 1)))
    return positions


# ------------------------------------------------------------------------------------ positive maps


def create_positive_map(
    encoding: Any,
    tokens_positive: Sequence[Sequence[Sequence[int]]],
    max_len: int = MAX_QUERY_LEN,
    *,
    binary: bool = False,
    caption: str | None = None,
) -> torch.Tensor:
    """Official ``create_positive_map`` (predictor_glip.py / modulated_coco.py).

    Row j has 1 on the tokens of every span of entity j (:func:`char_spans_to_token_positions`); positions
    >= ``max_len`` are silently dropped (official slice into a 256-wide map). Rows are then normalised as
    official: ``map / (map.sum(-1, keepdim) + 1e-6)`` in float32 (a 1-token entity gets 0.999999; an entity
    without tokens stays all zero). ``binary=True`` returns the 0/1 map instead (what the training collate
    makes of it with ``.bool().float()``).

    Args:
        encoding: tokenization of the caption (see :func:`encoding_offsets`).
        tokens_positive: N entities, each a list of ``(beg, end)`` spans.
        max_len: number of columns (the model's text length, 256).
        binary: return 0/1 instead of the normalised map.
        caption: when given, spans are checked against it.

    Returns:
        (N, max_len) float32 tensor.
    """
    offsets = encoding_offsets(encoding)
    positive_map = torch.zeros((len(tokens_positive), max_len), dtype=torch.float)
    for j, spans in enumerate(tokens_positive):
        for positions in char_spans_to_token_positions(offsets, spans, caption=caption):
            if positions:
                positive_map[j, positions[0] : positions[-1] + 1] = 1
    if binary:
        return positive_map
    return positive_map / (positive_map.sum(-1)[:, None] + 1e-6)


def positive_map_to_label_token_dict(positive_map: torch.Tensor, plus: int = 1) -> dict[int, list[int]]:
    """Official ``create_positive_map_label_to_token_from_positive_map``: ``{row + plus: nonzero columns}``.

    Every row gets a key, also rows without tokens (empty list). ``plus=1`` for the VL DyHead (labels
    start at 1). ``positive_map``: (N, L).
    """
    return {i + plus: torch.nonzero(row, as_tuple=True)[0].tolist() for i, row in enumerate(positive_map)}


def label_token_dict_from_spans(
    encoding: Any,
    tokens_positive: Sequence[Sequence[Sequence[int]]],
    labels: Sequence[int],
    *,
    caption: str | None = None,
) -> dict[int, list[int]]:
    """Official ``create_positive_dict`` (evaluation path): ``{labels[j]: token positions of entity j}``.

    Spans are mapped with the official retry rules; entities whose spans all get skipped are **absent**
    (the official returns a defaultdict, so they read as []). Positions are not limited to 256: this path
    tokenizes without truncation. The spans of one entity, and entities sharing a label, are concatenated.

    Args:
        encoding: tokenization of the caption (see :func:`encoding_offsets`).
        tokens_positive: N entities, each a list of spans.
        labels: N label ids (e.g. dataset category ids).
        caption: when given, spans are checked against it.
    """
    if len(labels) != len(tokens_positive):
        raise PromptError(f"{len(labels)} labels for {len(tokens_positive)} entities")
    offsets = encoding_offsets(encoding)
    result: dict[int, list[int]] = {}
    for label, spans in zip(labels, tokens_positive):
        for beg, end in (_check_span(span, caption) for span in spans):
            token_range = _span_token_range(offsets, beg, end)
            if token_range is None or token_range[0] > token_range[1]:
                continue  # official: the defaultdict key only appears once a position is appended
            result.setdefault(int(label), []).extend(range(token_range[0], token_range[1] + 1))
    return result


# ------------------------------------------------------------------------- detection (eval) prompts


def chunk_labels(items: Sequence[T], chunk_size: int = LVIS_CHUNK_SIZE) -> list[list[T]]:
    """Official ``chunks()``: consecutive pieces of ``chunk_size`` (the last may be shorter).

    Applied (separately) to the label ids sorted by id and to their names. ``chunk_size == -1`` means no
    chunking (``TEST.CHUNKED_EVALUATION -1``): one chunk with everything.
    """
    items = list(items)
    if chunk_size == -1:
        return [items]
    if chunk_size <= 0:
        raise PromptError(f"chunk_size must be positive (or -1 for no chunking), got {chunk_size}")
    return [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]


@dataclass(frozen=True)
class DetectionPrompt:
    """Result of :func:`build_detection_prompt` (official ``create_queries_and_maps``).

    caption:        the caption ("person. bicycle. ...").
    names:          (N,) the class texts in the caption (cleaned names).
    labels:         (N,) label ids, in caption order.
    spans:          (N,) char span of each class, end exclusive.
    label_to_token: {label: token positions} for labels that got tokens ([CLS] = 0). Computed, as
                    official, on the **untruncated** tokenization: positions can exceed ``max_len - 1``.
    labels_without_tokens: labels absent from ``label_to_token``.
    input_ids:      (num_tokens,) untruncated token ids incl. [CLS]/[SEP].
    offsets:        (num_tokens,) their char offsets.
    max_len:        the model's text length (256): the model truncates the caption there.
    """

    caption: str
    names: tuple[str, ...]
    labels: tuple[int, ...]
    spans: tuple[Span, ...]
    label_to_token: dict[int, list[int]]
    labels_without_tokens: tuple[int, ...]
    input_ids: tuple[int, ...]
    offsets: tuple[Span, ...]
    max_len: int = MAX_QUERY_LEN

    @property
    def num_tokens(self) -> int:
        """Tokens of the caption incl. [CLS]/[SEP], without truncation."""
        return len(self.input_ids)

    @property
    def exceeds_max_len(self) -> bool:
        """True when the model (truncating at ``max_len``) cannot see every class."""
        return self.num_tokens > self.max_len

    @property
    def labels_beyond_max_len(self) -> tuple[int, ...]:
        """Labels cut off (fully or partly) in the model's input. The model keeps positions
        0..max_len-2 and puts [SEP] at max_len-1, so a label with a position >= max_len - 1 is lost (official
        GLIP still scores position 255, i.e. the [SEP] token, for such a label)."""
        return tuple(lab for lab, pos in self.label_to_token.items() if pos and max(pos) >= self.max_len - 1)

    @property
    def tokens_positive(self) -> list[list[Span]]:
        """One single-span entity per class."""
        return [[span] for span in self.spans]

    def positive_map(self, binary: bool = False) -> torch.Tensor:
        """(N, max_len) float32 positive map of the classes (:func:`create_positive_map` over the untruncated
        tokenization, columns beyond ``max_len`` dropped)."""
        return create_positive_map(list(self.offsets), self.tokens_positive, self.max_len, binary=binary)


def build_detection_prompt(
    names: Sequence[str],
    labels: Sequence[int] | None = None,
    *,
    separator: str = EVAL_SEPARATOR,
    allow_empty: bool = False,
    max_len: int = MAX_QUERY_LEN,
    caption_prompt: Sequence[Mapping[str, str]] | None = None,
    additional_labels: Sequence[str] | None = None,
) -> DetectionPrompt:
    """Official ``create_queries_and_maps``: class caption + ``{label: token positions}``.

    The caption is :func:`build_class_caption`; it is tokenized **without truncation** (as official) and
    mapped with :func:`label_token_dict_from_spans`. A caption longer than ``max_len`` tokens is not an
    error (the official code does the same and the model then truncates it): check ``exceeds_max_len`` /
    ``num_tokens`` or use :func:`build_chunked_detection_prompts`; a warning is logged.

    Args:
        names: N class names (cleaned with :func:`clean_name`).
        labels: N distinct label ids (default 1..N, matching the model's ``plus=1`` numbering).
        separator, caption_prompt, additional_labels: see :func:`build_class_caption`.
        allow_empty: False: a class empty after cleaning, or one that gets no token, raises
            :class:`PromptError`. True: reproduce the official output (such classes are listed in
            ``labels_without_tokens``); an empty *first* class still raises, as the official code crashes.
        max_len: the model's text length (256).

    Returns:
        :class:`DetectionPrompt`.
    """
    names = _check_names(names)
    if labels is None:
        labels = list(range(1, len(names) + 1))
    labels = [int(label) for label in labels]
    if len(labels) != len(names):
        raise PromptError(f"{len(labels)} labels for {len(names)} class names")
    if len(set(labels)) != len(labels):
        raise PromptError(f"label ids must be distinct, got {labels}")

    prompt = build_class_caption(
        names,
        separator,
        allow_empty=allow_empty,
        caption_prompt=caption_prompt,
        additional_labels=additional_labels,
    )
    encoding = get_tokenizer()(prompt.caption, truncation=False)
    offsets = encoding_offsets(encoding)
    label_to_token = label_token_dict_from_spans(
        offsets, prompt.tokens_positive, labels, caption=prompt.caption
    )
    without = tuple(lab for lab in labels if lab not in label_to_token)
    if without and not allow_empty:
        bad = [f"{lab} {names[labels.index(lab)]!r}" for lab in without]
        raise PromptError(f"classes without any token: {', '.join(bad)}; pass allow_empty=True to keep them")
    result = DetectionPrompt(
        caption=prompt.caption,
        names=prompt.names,
        labels=tuple(labels),
        spans=prompt.spans,
        label_to_token=label_to_token,
        labels_without_tokens=without,
        input_ids=tuple(encoding["input_ids"]),
        offsets=tuple(offsets),
        max_len=max_len,
    )
    if result.exceeds_max_len:
        logger.warning(
            "class caption has %d tokens > %d: the model truncates it and cannot see labels %s; "
            "use build_chunked_detection_prompts",
            result.num_tokens,
            max_len,
            list(result.labels_beyond_max_len),
        )
    return result


def build_chunked_detection_prompts(
    names: Sequence[str],
    labels: Sequence[int] | None = None,
    chunk_size: int = LVIS_CHUNK_SIZE,
    *,
    separator: str = EVAL_SEPARATOR,
    allow_empty: bool = False,
    max_len: int = MAX_QUERY_LEN,
    additional_labels: Sequence[str] | None = None,
) -> list[DetectionPrompt]:
    """Official ``create_queries_and_maps_from_dataset`` with ``TEST.CHUNKED_EVALUATION``.

    Classes are sorted by label id, split with :func:`chunk_labels` and each chunk gets its own
    :func:`build_detection_prompt` (label ids stay the global ones). ``chunk_size=-1``: a single prompt.

    Returns:
        one :class:`DetectionPrompt` per chunk.
    """
    names = _check_names(names)
    if labels is None:
        labels = list(range(1, len(names) + 1))
    if len(labels) != len(names):
        raise PromptError(f"{len(labels)} labels for {len(names)} class names")
    order = sorted(range(len(names)), key=lambda i: labels[i])
    label_chunks = chunk_labels([int(labels[i]) for i in order], chunk_size)
    name_chunks = chunk_labels([names[i] for i in order], chunk_size)
    return [
        build_detection_prompt(
            chunk_names,
            chunk_ids,
            separator=separator,
            allow_empty=allow_empty,
            max_len=max_len,
            additional_labels=additional_labels,
        )
        for chunk_names, chunk_ids in zip(name_chunks, label_chunks)
    ]


# ------------------------------------------------------------------------------- model-call prompts


@dataclass(frozen=True)
class Prompt:
    """The text of one model call and what its labels are.

    caption:         the text fed to the tokenizer.
    label_to_tokens: ``{label: token positions}`` ([CLS] = 0) of the labels that got tokens.
    labels:          (N,) the labels this prompt asks for (predictor: 1-based indices into the names of the
                     whole request, so chunks of one class list keep global labels).
    names:           (N,) the name of each label (class name or phrase), parallel to ``labels``.
    """

    caption: str
    label_to_tokens: dict[int, list[int]]
    labels: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.names):
            raise PromptError(f"a prompt has {len(self.labels)} labels for {len(self.names)} names")


def _token_costs(texts: Sequence[str]) -> list[int]:
    tokenizer = get_tokenizer()
    return [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]


def pack_by_tokens(
    costs: Sequence[int], max_len: int = MAX_QUERY_LEN, names: Sequence[str] | None = None
) -> list[list[int]]:
    """Greedy packing of entries with ``costs[i]`` tokens into groups that fit ``max_len`` tokens.

    "a. b" tokenizes to tokens(a) + ['.'] + tokens(b), so a group costs [CLS] + [SEP] + its entries + one
    separator between two entries. Returns the groups of entry indices, in order; an entry that alone
    does not fit is a :class:`PromptError` (named by ``names[i]`` when given).
    """
    groups: list[list[int]] = [[]]
    used = 2  # [CLS], [SEP]
    for index, cost in enumerate(costs):
        extra = cost + (1 if groups[-1] else 0)
        if groups[-1] and used + extra > max_len:
            groups.append([])
            used, extra = 2, cost
        if used + extra > max_len:
            what = f"class {index} {names[index]!r}" if names is not None else f"entry {index}"
            raise PromptError(f"{what} alone needs {cost} tokens")
        groups[-1].append(index)
        used += extra
    return groups


def class_prompts(
    names: Sequence[str],
    chunk_size: int | None = None,
    max_len: int = MAX_QUERY_LEN,
    labels: Sequence[int] | None = None,
    *,
    caption_prompt: Sequence[Mapping[str, str]] | None = None,
) -> list[Prompt]:
    """Detection prompts of a class list (official ". "-joined cleaned names), in the given order.

    ``chunk_size``:

    * ``None``: as many classes per prompt as fit ``max_len`` tokens (greedy, in order);
    * ``k >= 1``: consecutive pieces of ``k`` classes (official ``TEST.CHUNKED_EVALUATION k``,
      :func:`chunk_labels`);
    * ``-1``: all classes in one prompt (official ``TEST.CHUNKED_EVALUATION -1``).

    A prompt that does not fit ``max_len`` tokens is a :class:`PromptError` (never a silent truncation; the
    official truncating behaviour stays in :func:`build_chunked_detection_prompts`).

    Args:
        names: N class names.
        chunk_size: see above.
        max_len: the model's text length.
        labels: N distinct label ids (default 1..N).
        caption_prompt: optional official ``DATASETS.CAPTION_PROMPT`` (N ``{"prefix", "name", "suffix"}``).

    Returns:
        one :class:`Prompt` per chunk, labels global.
    """
    if isinstance(names, str):
        raise PromptError("give a list of class names, not a single string")
    names = [str(c) for c in names]
    if not names:
        raise PromptError("no class names given")
    if caption_prompt is None:
        for index, name in enumerate(names):
            if not any(ch.isalnum() for ch in clean_name(name)):  # "", "...", "(empty)", "(x)_."
                raise PromptError(f"class {index} {name!r} is empty after cleaning")
    elif len(caption_prompt) != len(names):
        raise PromptError(f"caption_prompt has {len(caption_prompt)} entries for {len(names)} classes")
    label_ids = list(range(1, len(names) + 1)) if labels is None else [int(lab) for lab in labels]
    if len(label_ids) != len(names):
        raise PromptError(f"{len(label_ids)} labels for {len(names)} class names")
    if chunk_size is not None and chunk_size < 1 and chunk_size != -1:
        raise PromptError(
            f"chunk_size must be a positive number of classes per prompt, got {chunk_size} "
            "(-1: all classes in one prompt; None: as many as fit the text length)"
        )
    if chunk_size is None:
        if caption_prompt is None:
            texts = [clean_name(n) for n in names]
        else:
            texts = [p["prefix"] + p["name"] + p["suffix"] for p in caption_prompt]
        groups = pack_by_tokens(_token_costs(texts), max_len, names)
    else:
        groups = chunk_labels(list(range(len(names))), chunk_size)
    prompts = []
    for group in groups:
        group_labels = [label_ids[i] for i in group]
        prompt = build_detection_prompt(
            [names[i] for i in group],
            group_labels,
            max_len=max_len,
            caption_prompt=None if caption_prompt is None else [caption_prompt[i] for i in group],
        )
        if prompt.exceeds_max_len:
            raise PromptError(
                f"classes {group[0]}..{group[-1]} need {prompt.num_tokens} tokens > {max_len}: "
                "use a smaller chunk size (or None: as many as fit)"
            )
        prompts.append(
            Prompt(
                prompt.caption,
                dict(prompt.label_to_token),
                tuple(group_labels),
                tuple(names[i] for i in group),
            )
        )
    return prompts


def caption_prompt(
    caption: str,
    phrases: Sequence[str] | None = None,
    spans: Sequence[Sequence[tuple[int, int]]] | None = None,
    max_len: int = MAX_QUERY_LEN,
) -> Prompt:
    """A grounding prompt of ``caption``: labels 1..N for N entities.

    ``spans`` (N lists of char spans; ``phrases`` then optionally names them), else ``phrases`` (each covers
    all its whole-word occurrences), else the noun phrases extracted offline (spaCy). A caption over
    ``max_len`` tokens, a span outside the caption, or a phrase that covers no token is a
    :class:`PromptError`.
    """
    from glip.text.noun_phrases import find_noun_phrases, phrase_spans
    from glip.text.tokenizer import tokenize_captions

    tokenize_captions([caption], max_length=max_len, pad_to_max=False)  # checks & length
    if spans is not None:
        entity_spans = [[(int(s), int(e)) for s, e in entity] for entity in spans]
        for entity in entity_spans:
            for start, end in entity:
                if not 0 <= start < end <= len(caption):
                    raise PromptError(
                        f"span ({start}, {end}) does not fit the caption of {len(caption)} chars"
                    )
        names = (
            list(phrases) if phrases else [" / ".join(caption[s:e] for s, e in ent) for ent in entity_spans]
        )
    else:
        names = list(phrases) if phrases else find_noun_phrases(caption)
        if not names:
            raise PromptError(f"no noun phrase found in {caption!r}: pass phrases=[...]")
        entity_spans = phrase_spans(caption, names)
    if len(names) != len(entity_spans):
        raise PromptError(f"{len(names)} phrase names for {len(entity_spans)} span groups")
    encoding = get_tokenizer()(caption, truncation=False)
    labels = list(range(1, len(names) + 1))
    label_to_tokens = label_token_dict_from_spans(encoding, entity_spans, labels, caption=caption)
    lost = [names[lab - 1] for lab in labels if lab not in label_to_tokens]
    if lost:
        raise PromptError(f"phrases {lost} cover no token of the caption")
    return Prompt(caption, label_to_tokens, tuple(labels), tuple(names))
