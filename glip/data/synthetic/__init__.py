"""A deterministic synthetic grounding world: coloured, textured shapes with exact boxes and captions.

``glip synth --out DIR --num-images N --seed S --split SPLIT`` (or :func:`~glip.data.synthetic.writers.generate`) draws N images of
1-5 objects (shapes x colours x sizes x textures, overlaps allowed, backgrounds of varying clutter) and
writes them in the three kinds of data GLIP trains on:

* detection: ``detection.json`` (COCO, categories such as "red circle") and ``detection.odvg.jsonl`` +
  ``label_map.json`` (the same boxes as ODVG detection records);
* grounding: ``grounding.json`` (MDETR / Flickr style: a caption per image, ``tokens_positive`` per box) and
  ``grounding.odvg.jsonl`` (ODVG grounding records), captions such as
  "the small red circle left of a blue square and two striped green stars";
* caption-only: ``captions.jsonl`` (image + caption, no boxes) with the hidden ground truth
  ``captions_gt.json`` (COCO, every object, with its span in that caption) to measure pseudo-labels.

``vocab.json`` describes the vocabulary splits (seen concepts, concepts only in grounding captions, held-out
synonyms, held-out class sets) and ``README.txt`` the directory. Everything is a pure function of
``(seed, split, image index, size, random_aspect)``: the same arguments give byte-identical files, and the
first N images of a larger run are the same images. See ``docs/synthetic.md``.

Boxes are the tight bounding box of the object's *own* mask (amodal: a partly occluded object keeps its full
box), as inclusive pixel coordinates ``x1, y1, x2, y2``, written COCO ``[x1, y1, x2 - x1 + 1, y2 - y1 + 1]``
(legacy ``x2 = x + w - 1``) and ODVG ``[x1, y1, x2 + 1, y2 + 1]``: every loader reads back
``x1, y1, x2, y2``.

One concept per module, bottom-up: :mod:`~glip.data.synthetic.vocabulary` (names and splits; standard library
only), :mod:`~glip.data.synthetic.geometry` (objects and their masks), :mod:`~glip.data.synthetic.painting`,
:mod:`~glip.data.synthetic.scene` (:func:`make_scene`), :mod:`~glip.data.synthetic.captions` (captions and
referring expressions), :mod:`~glip.data.synthetic.writers` (the files, :func:`generate`) and
:mod:`~glip.data.synthetic.vl` (questions, answers and captions for the GLIPv2 tasks).

This package imports nothing heavy: the names below are loaded from their module on first access.
"""

from __future__ import annotations

from glip.data.synthetic.vocabulary import __all__ as _VOCABULARY  # standard library only
from glip.lazy import lazy_exports

#: public name -> the module that defines it (loaded lazily)
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(_VOCABULARY, "vocabulary"),
    **dict.fromkeys(("SceneObject", "dilate", "object_mask"), "geometry"),
    **dict.fromkeys(("object_palette", "paint_background", "paint_object"), "painting"),
    **dict.fromkeys(
        (
            "MAX_OBJECTS",
            "MIN_VISIBLE",
            "REPEAT",
            "SIZE_RANGES",
            "Scene",
            "make_scene",
            "relation_holds",
            "scene_rng",
            "visible_masks",
        ),
        "scene",
    ),
    "build_caption": "captions",
    **dict.fromkeys(("INFO", "coco_box", "generate", "odvg_box"), "writers"),
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
