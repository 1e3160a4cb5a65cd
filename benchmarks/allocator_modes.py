"""GLIP-T forward time and peak RSS under glibc allocator settings and chunk sizes, each in its own process.

The search behind the "default mode" target of docs/benchmarks.md: is there a setting of ``glip.memory``
(strategy, thresholds) or of the memory-bounding chunk sizes (fusion head groups, deformable-conv row bands,
Swin window / MLP chunks) that keeps the peak at the level of the ``map`` strategy and the time at the level
of ``never``? GLIP-T, random weights (seed 0), 800x1333, the 80 COCO names, fp32, ``torch.no_grad()``, three
forwards + post-processing per configuration; the peak is ``ru_maxrss`` after each forward (the process
high-water mark, so it only grows). Prints one JSON line per configuration:

    python benchmarks/allocator_modes.py --configs never,map,stages
    python benchmarks/allocator_modes.py --configs 'never:0.5,map:1:GLIP_MEMORY_MAP_THRESHOLD=16777216'

A configuration is ``RELEASE[:SCALE[:ENV=VALUE+ENV=VALUE]]``: ``SCALE`` multiplies the four chunk sizes
(1 = the library's), the variables are set for that child only (``GLIP_MEMORY_HEAP_THRESHOLD``,
``GLIP_MEMORY_STAGE_TRIM``, ``GLIP_MEMORY_TRIM_THRESHOLD``, ``GLIP_MEMORY_MAP_THRESHOLD``, ``MALLOC_ARENA_MAX``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def child(release: str, scale: float, repeats: int, threads: int) -> dict:
    importlib.import_module("glip")  # before torch, as a user would: glip asks torch for huge pages
    import torch
    from latency import tokenize

    import glip.memory
    import glip.models.dyhead as dyhead
    from glip.config import get_preset
    from glip.models.glip import build_model
    from glip.preprocess import ImageBatch, padded_size

    torch.set_num_threads(threads)
    glip.memory.RELEASE = release
    if os.environ.get("GLIP_MEMORY_MAP_THRESHOLD"):
        glip.memory.MAP_THRESHOLD = int(os.environ["GLIP_MEMORY_MAP_THRESHOLD"])
    torch.manual_seed(0)
    model = build_model(get_preset("glip_t")).eval()
    dyhead.DEFORM_COLUMNS_MAX_ELEMENTS = int((1 << 22) * scale)
    for module in model.modules():
        if hasattr(module, "max_logit_elements"):
            module.max_logit_elements = int((1 << 22) * scale)
        if hasattr(module, "windows_per_chunk"):
            module.windows_per_chunk = max(1, int(256 * scale))
        if hasattr(module, "tokens_per_chunk"):
            module.tokens_per_chunk = max(1, int(8192 * scale))
    encoding, label_to_tokens, _ = tokenize(None)
    images = ImageBatch(torch.randn(1, 3, *padded_size(800, 1333, 32)), [(800, 1333)])

    def peak_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    before = peak_mb()
    times, peaks = [], []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            output = model(images, encoding["input_ids"], encoding["attention_mask"])
            model.postprocess(output, label_to_tokens)
            times.append(round(time.perf_counter() - start, 2))
            del output
            peaks.append(round(peak_mb()))
    return {
        "release": release,
        "scale": scale,
        "times_s": times,
        "peaks_mb": peaks,
        "before_mb": round(before),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="never,map,stages")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], float(args.child[1]), args.repeats, args.threads)))
        return
    for config in args.configs.split(","):
        release, scale, envs = (config.split(":") + ["1", ""])[:3]
        extra = dict(item.split("=", 1) for item in envs.split("+") if item)
        command = [sys.executable, __file__, "--child", release, scale or "1"]
        command += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **extra})
        if done.returncode:
            print(json.dumps({"config": config, "error": done.stderr[-2000:]}), flush=True)
            continue
        print(json.dumps({"config": config, **json.loads(done.stdout.strip().splitlines()[-1])}), flush=True)


if __name__ == "__main__":
    main()
