"""Phrase identity for GLIPv2's category propagation: which phrases of different captions name the same thing.

L_inter (``glip/losses/contrastive.py``) makes a region of one image positive with the words of another image's
caption when both name the same category / phrase. The identity of a phrase is its text, normalised:

    lower case -> punctuation replaced by spaces -> whitespace collapsed -> a leading "a" / "an" / "the" dropped

so "A red circle", "the red circle" and the detection category "red circle" are one phrase, while "two red
circles" is another (no lemmatisation). The id is a stable 63-bit hash of that text (the same in every process
and every run, unlike Python's ``hash``), so ids can be gathered across DDP ranks as int64 tensors.
:data:`NO_PHRASE` (-1) marks tokens that belong to no phrase.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import torch

__all__ = ["NO_PHRASE", "normalize_phrase", "phrase_id", "phrase_ids_for_spans", "token_phrase_ids"]

NO_PHRASE = -1
_ARTICLES = ("a", "an", "the")
_PUNCTUATION = re.compile(r"[^\w\s]+")


def normalize_phrase(text: str) -> str:
    """``"The  Red-Circle."`` -> ``"red circle"`` (see the module docstring)."""
    words = _PUNCTUATION.sub(" ", text.lower()).split()
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(words)


def phrase_id(text: str) -> int:
    """Stable non-negative int64 id of the normalised phrase (``NO_PHRASE`` for text without a word)."""
    normalised = normalize_phrase(text)
    if not normalised:
        return NO_PHRASE
    digest = hashlib.blake2b(normalised.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def phrase_ids_for_spans(caption: str, spans: Sequence[Sequence[Sequence[int]]]) -> torch.Tensor:
    """One id per span list (a box's phrase: its spans' texts joined by a space). -> (G,) int64."""
    texts = [" ".join(caption[int(b) : int(e)] for b, e in group) for group in spans]
    return torch.tensor([phrase_id(t) for t in texts], dtype=torch.int64)


def token_phrase_ids(token_maps: Sequence[torch.Tensor], ids: Sequence[torch.Tensor]) -> torch.Tensor:
    """Phrase id of every token position: (T,) int64, ``NO_PHRASE`` where no phrase covers the token.

    token_maps: maps (P_k, T) binary (e.g. every phrase of a prompt, then the boxes' phrases); ids: (P_k,)
    their ids. Later rows win where phrases overlap.
    """
    if not token_maps:
        raise ValueError("token_phrase_ids needs at least one token map")
    length = token_maps[0].shape[1]
    out = torch.full((length,), NO_PHRASE, dtype=torch.int64)
    for token_map, phrase in zip(token_maps, ids):
        if token_map.shape[0] != phrase.shape[0] or token_map.shape[1] != length:
            raise ValueError(
                f"token map of shape {tuple(token_map.shape)} does not fit {phrase.shape[0]} ids and {length} tokens"
            )
        for row, value in zip(token_map, phrase.tolist()):
            out[row > 0] = value
    return out
