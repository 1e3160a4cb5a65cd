"""Captions and referring expressions of synthetic scenes, with the exact char span of every phrase."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from glip.data.synthetic.geometry import SceneObject
from glip.data.synthetic.scene import Scene, relation_holds
from glip.data.synthetic.vocabulary import NUMBERS, PLURALS, RELATION_WORDS, RELATIONS, TEXTURE_WORDS

__all__ = ["build_caption"]


def _body(obj: SceneObject, attrs: Sequence[str], plural: bool, words: dict[str, str]) -> str:
    adjectives = []
    if "size" in attrs:
        adjectives.append(obj.size)
    if "texture" in attrs:
        adjectives.append(TEXTURE_WORDS[obj.texture])
    adjectives.append(obj.colour)
    noun = PLURALS[obj.shape] if plural else obj.shape
    return " ".join([words.get(w, w) for w in adjectives] + [noun])


def _article(body: str) -> str:
    return ("an " if body[0] in "aeiou" else "a ") + body


def _matches(a: SceneObject, b: SceneObject, attrs: Sequence[str]) -> bool:
    return (
        a.colour == b.colour
        and a.shape == b.shape
        and ("size" not in attrs or a.size == b.size)
        and ("texture" not in attrs or a.texture == b.texture)
    )


def build_caption(
    scene: Scene, rng: np.random.Generator, words: dict[str, str] | None = None, mention_all: bool = False
) -> tuple[str, list[tuple[str, tuple[int, int], tuple[int, ...]]]]:
    """A caption of ``scene`` and its phrases ``(text, (beg, end), object indices)``, with
    ``caption[beg:end] == text``.

    A phrase ("a small red circle", "two striped green stars") denotes *every* object matching what it says,
    unless a relation singles one out ("the red circle left of a blue square ... and the other red circle").
    Relations are always true (:func:`relation_holds`). ``mention_all=False`` sometimes leaves objects out
    (the caption then names only some of them: unnamed objects are not annotated).
    """
    words = words or {}
    objs = scene.objects
    n = len(objs)
    partial = not mention_all and n > 1 and rng.random() < 0.3
    covered: set[int] = set()
    groups: list[tuple[tuple[str, ...], list[int]]] = []
    order = [int(i) for i in rng.permutation(n)]
    for i in order:
        if i in covered or (partial and rng.random() < 0.5):
            continue
        attrs = tuple(a for a, p in (("size", 0.5), ("texture", 0.35)) if rng.random() < p)
        members = [j for j in range(n) if _matches(objs[j], objs[i], attrs)]
        if covered & set(members):  # the full description never reaches an object already named
            attrs = ("size", "texture")
            members = [j for j in range(n) if _matches(objs[j], objs[i], attrs)]
        groups.append((attrs, members))
        covered.update(members)
    if not groups and n:
        attrs = ("size", "texture") if rng.random() < 0.5 else ()
        groups.append((attrs, [j for j in range(n) if _matches(objs[j], objs[order[0]], attrs)]))

    def phrase(attrs: Sequence[str], members: Sequence[int], determiner: str) -> str:
        body = _body(objs[members[0]], attrs, len(members) > 1, words)
        if len(members) > 1:
            body = f"{NUMBERS[len(members)]} {body}"
            return f"{determiner} {body}" if determiner in ("the", "the other") else body
        if determiner == "a":
            return _article(body)
        return f"{determiner} {body}"

    def relation_text(relation: str) -> str:
        forms = RELATION_WORDS[relation]
        return forms[int(rng.integers(len(forms)))]

    # a clause is a list of (text, object indices or None)
    clauses: list[list[tuple[str, tuple[int, ...] | None]]] = []
    used: set[int] = set()
    singles = [g for g, (_, m) in enumerate(groups) if len(m) == 1]
    for g in [int(k) for k in rng.permutation(len(groups))]:
        if g in used:
            continue
        attrs, members = groups[g]
        used.add(g)
        done = False
        candidates = [s for s in singles if s not in used]
        if len(members) >= 2 and candidates and rng.random() < 0.5:  # a relation singles out one member
            for s in [candidates[int(k)] for k in rng.permutation(len(candidates))]:
                b = groups[s][1][0]
                for relation in [RELATIONS[int(k)] for k in rng.permutation(len(RELATIONS))]:
                    hits = [m for m in members if relation_holds(relation, objs[m], objs[b], m, b, scene)]
                    if len(hits) != 1:
                        continue
                    rest = tuple(m for m in members if m != hits[0])
                    b_det = "a" if rng.random() < 0.5 else "the"
                    clauses.append(
                        [
                            (phrase(attrs, hits, "the"), tuple(hits)),
                            (f" {relation_text(relation)} ", None),
                            (phrase(groups[s][0], [b], b_det), (b,)),
                        ]
                    )
                    if mention_all or rng.random() < 0.7:
                        clauses.append([(phrase(attrs, rest, "the other"), rest)])
                    used.add(s)
                    done = True
                    break
                if done:
                    break
        elif len(members) == 1 and candidates and rng.random() < 0.4:  # "a red circle above the blue star"
            a = members[0]
            for s in [candidates[int(k)] for k in rng.permutation(len(candidates))]:
                b = groups[s][1][0]
                true = [r for r in RELATIONS if relation_holds(r, objs[a], objs[b], a, b, scene)]
                if not true:
                    continue
                relation = true[int(rng.integers(len(true)))]
                a_det = "the" if rng.random() < 0.6 else "a"
                b_det = "a" if rng.random() < 0.5 else "the"
                clauses.append(
                    [
                        (phrase(attrs, members, a_det), (a,)),
                        (f" {relation_text(relation)} ", None),
                        (phrase(groups[s][0], [b], b_det), (b,)),
                    ]
                )
                used.add(s)
                done = True
                break
        if not done:
            determiner = "a" if rng.random() < 0.8 else "the"
            clauses.append([(phrase(attrs, members, determiner), tuple(members))])

    prefix = ("", "", "", "a picture of ", "an image with ", "this shows ")[int(rng.integers(6))]
    pieces: list[tuple[str, tuple[int, ...] | None]] = [(prefix, None)]
    for k, clause in enumerate(clauses):
        if k:
            pieces.append((" and " if k == len(clauses) - 1 else ", ", None))
        pieces.extend(clause)
    pieces.append(("." if rng.random() < 0.5 else "", None))
    caption, phrases = "", []
    for text, members_of in pieces:
        if members_of is not None:
            phrases.append((text, (len(caption), len(caption) + len(text)), members_of))
        caption += text
    return caption, phrases
