"""Caption edits that keep char spans valid: swapping "left" <-> "right" when an image is flipped.

"left" and "right" differ in length by one character, so every span after (or around) a swapped word moves.
:func:`swap_left_right` rewrites the caption and remaps each span through the edit, so a span still covers
the same phrase (with the swapped word inside it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from glip.text.prompts import Span

__all__ = ["CharMap", "swap_left_right"]

# whole words only: "left-hand" -> "right-hand", but "leftover" / "bright" / "copyright" are untouched
_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)
_SWAP = {"left": "right", "right": "left"}


def _match_case(word: str, template: str) -> str:
    if template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


class CharMap:
    """Maps char positions of a caption to positions in an edited caption.

    ``edits`` are non-overlapping ``(beg, end, new_length)`` replacements of ``old[beg:end]`` by a text of
    ``new_length`` characters, in increasing order. A position outside every edited range moves by the total
    length change of the edits before it; a position strictly inside an edited range snaps outward to the
    new word's start (span begins) or end (span ends), so a span never cuts a replaced word in half.
    """

    def __init__(self, edits: Sequence[tuple[int, int, int]]) -> None:
        self.edits = list(edits)

    def _map(self, position: int, is_end: bool) -> int:
        shift = 0
        for beg, end, new_length in self.edits:
            if position <= beg:
                break
            if position < end:  # strictly inside the replaced word
                return beg + shift + (new_length if is_end else 0)
            shift += new_length - (end - beg)
        return position + shift

    def span(self, span: Sequence[int]) -> Span:
        """Remap a ``(beg, end)`` span (end exclusive)."""
        beg, end = int(span[0]), int(span[1])
        return self._map(beg, is_end=False), self._map(end, is_end=True)


def swap_left_right(
    caption: str, tokens_positive: Sequence[Sequence[Sequence[int]]]
) -> tuple[str, list[list[Span]]]:
    """Swap the whole words "left" and "right" (any case, case preserved: "Left" -> "Right") in ``caption``
    and remap every span.

    Args:
        caption: the text.
        tokens_positive: per entity, a list of ``(beg, end)`` char spans into ``caption``.

    Returns:
        ``(new_caption, new_tokens_positive)``; unchanged when the caption has neither word.

    >>> swap_left_right("the man on the left of the red car", [[(0, 7)], [(11, 19)], [(27, 34)]])
    ('the man on the right of the red car', [[(0, 7)], [(11, 20)], [(28, 35)]])
    """
    pieces: list[str] = []
    edits: list[tuple[int, int, int]] = []
    last = 0
    for match in _LEFT_RIGHT.finditer(caption):
        word = match.group(0)
        new = _match_case(_SWAP[word.lower()], word)
        pieces.append(caption[last : match.start()])
        pieces.append(new)
        edits.append((match.start(), match.end(), len(new)))
        last = match.end()
    if not edits:
        return caption, [[(int(s[0]), int(s[1])) for s in spans] for spans in tokens_positive]
    pieces.append(caption[last:])
    mapping = CharMap(edits)
    return "".join(pieces), [[mapping.span(s) for s in spans] for spans in tokens_positive]
