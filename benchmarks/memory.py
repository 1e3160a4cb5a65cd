"""Where the memory of one GLIP forward goes: process RSS per stage, sampled while the model runs.

GLIP-T (random weights, fp32, eval, ``torch.no_grad()``) at 800x1333 with the 80 COCO names as the prompt,
the setting of ``benchmarks/latency.py``. A background thread reads ``/proc/self/statm`` every millisecond;
forward hooks name the running stage (backbone, FPN, text encoder, each head block's fusion / BERT layer /
DyConv, predictors, post-processing), so each stage gets the RSS at its start and the highest RSS seen
while it ran. Prints JSON.

    python benchmarks/memory.py                      # the library as it ships
    python benchmarks/memory.py --release never      # glibc's usual allocator behaviour
    python benchmarks/memory.py --preset tiny --height 320 --width 512   # quick check

``--release`` sets ``glip.memory.RELEASE`` for this run (see ``glip/memory.py``): ``auto`` (the library's
default, today the ``map`` strategy: during a large no-grad CPU forward every block above 1 MB is mapped on
allocation and unmapped when freed), ``map``, ``stages`` (opt-in: blocks up to 32 MB from the heap, free heap
pages returned at the end of each stage) or ``never`` (glibc's usual behaviour). Each configuration must run
in its own process (the RSS high-water mark only grows); ``--compare`` does that for
``--modes`` (default never, map, stages), ``--rounds`` times in alternation (so a change in the machine's
load hits every mode alike), and prints per mode the peaks and the median forward time of the forwards
after the first, and its ratio to the fastest mode of the same run. Environment variables
(``GLIP_MEMORY_HEAP_THRESHOLD``, ``THP_MEM_ALLOC_ENABLE``, ...) can be given per mode as
``--modes 'stages,stages:GLIP_MEMORY_HEAP_THRESHOLD=8388608'``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

# benchmarks/ is on sys.path when this runs as a script; latency.py imports nothing heavy at module level
from latency import COCO_NAMES, peak_rss_mb, rss_mb, tokenize


class StageSampler(threading.Thread):
    """Samples RSS every ``interval`` seconds and keeps, per stage name, the RSS at entry and the peak."""

    def __init__(self, interval: float = 0.001) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.stage = "idle"
        self.stages: dict[str, dict[str, float]] = {}
        self._stop_event = threading.Event()

    def enter(self, name: str) -> None:
        now = rss_mb()
        self.stage = name
        row = self.stages.setdefault(name, {"start_mb": now, "peak_mb": now})
        row["peak_mb"] = max(row["peak_mb"], now)

    def run(self) -> None:
        while not self._stop_event.is_set():
            now = rss_mb()
            row = self.stages.get(self.stage)
            if row is not None and now > row["peak_mb"]:
                row["peak_mb"] = now
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def attach(model, sampler: StageSampler) -> None:  # type: ignore[no-untyped-def]
    """Forward pre-hooks that name the running stage."""

    def hook(name: str):  # type: ignore[no-untyped-def]
        return lambda module, args: sampler.enter(name)

    model.backbone.register_forward_pre_hook(hook("backbone"))
    model.fpn.register_forward_pre_hook(hook("fpn"))
    model.text_encoder.register_forward_pre_hook(hook("text_encoder"))
    for index, block in enumerate(model.head.blocks):
        for part in ("fusion", "text_layer", "dyconv"):
            module = getattr(block, part)
            if module is not None:
                module.register_forward_pre_hook(hook(f"block{index}.{part}"))
    model.head.bbox_pred.register_forward_pre_hook(hook("predictors"))


def run(args: argparse.Namespace) -> dict:
    torch_start = rss_mb()
    importlib.import_module("glip")  # before torch, as a user would: glip asks torch for huge pages
    import torch

    import glip.memory
    from glip.config import get_preset
    from glip.models.glip import build_model
    from glip.preprocess import ImageBatch, padded_size

    torch.set_num_threads(args.threads)
    glip.memory.RELEASE = args.release
    imports = rss_mb()
    torch.manual_seed(0)
    model = build_model(get_preset(args.preset)).eval()
    with_model = rss_mb()
    encoding, label_to_tokens, _ = tokenize(None)
    height, width = args.height, args.width
    padded = padded_size(height, width, model.config.input.size_divisibility)
    images = ImageBatch(torch.randn(1, 3, *padded), [(height, width)])
    sampler = StageSampler()
    attach(model, sampler)
    sampler.start()
    rows = []
    with torch.no_grad():
        for _ in range(args.repeats):
            sampler.stages = {}
            before = rss_mb()
            cpu = time.process_time()
            start = time.perf_counter()
            output = model(images, encoding["input_ids"], encoding["attention_mask"])
            sampler.enter("postprocess")
            detections = model.postprocess(output, label_to_tokens)
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu
            sampler.enter("idle")
            del output, detections
            rows.append(
                {
                    "seconds": round(seconds, 2),
                    "cpu_seconds": round(cpu, 2),
                    "rss_before_mb": round(before, 1),
                    "peak_rss_so_far_mb": round(peak_rss_mb(), 1),
                    "stages": {
                        k: {n: round(v, 1) for n, v in row.items()} for k, row in sampler.stages.items()
                    },
                }
            )
    sampler.stop()
    names = ", ".join(COCO_NAMES[:3])
    return {
        "preset": args.preset,
        "image": [height, width],
        "prompt": f"{len(COCO_NAMES)} COCO names ({names}, ...)",
        "threads": args.threads,
        "release": args.release,
        "rss_python_mb": round(torch_start, 1),
        "rss_after_imports_mb": round(imports, 1),
        "rss_with_model_mb": round(with_model, 1),
        "forwards": rows,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="glip_t")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--release", choices=("auto", "stages", "map", "never"), default="auto")
    parser.add_argument("--compare", action="store_true", help="run --modes, each in its own process")
    parser.add_argument(
        "--modes", default="never,map,stages", help="comma-separated RELEASE[:ENV=VALUE[+...]]"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="--compare: alternate the modes this many times"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--detail", action="store_true", help="--compare: keep every child's per-stage JSON")
    args = parser.parse_args()
    if not args.compare:
        emit(run(args), args.out)
        return
    emit(compare(args), args.out)


def compare(args: argparse.Namespace) -> dict:
    """Every mode of ``--modes`` in its own process, ``--rounds`` times in alternation."""
    import os
    import statistics

    runs: dict[str, list[dict]] = {}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for mode in args.modes.split(","):
            release, _, extra = mode.partition(":")
            env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
            env.update(item.split("=", 1) for item in extra.split("+") if item)
            command = [sys.executable, __file__, "--preset", args.preset, "--height", str(args.height)]
            command += ["--width", str(args.width), "--threads", str(args.threads)]
            command += ["--repeats", str(args.repeats), "--release", release]  # no --out: the child prints
            proc = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
            runs.setdefault(mode, []).append(json.loads(proc.stdout))
            load.append(os.getloadavg()[0])
    summary: dict = {}
    for mode, results in runs.items():
        # the first forward of a process pays one-off costs (first touch of the weights' pages, ...)
        later = [row["seconds"] for r in results for row in r["forwards"][1:]] or [
            r["forwards"][0]["seconds"] for r in results
        ]
        later_cpu = [row["cpu_seconds"] for r in results for row in r["forwards"][1:]] or [
            r["forwards"][0]["cpu_seconds"] for r in results
        ]
        summary[mode] = {
            "forward_s_median": round(statistics.median(later), 2),
            "forward_cpu_s_median": round(statistics.median(later_cpu), 2),
            "forward_cpu_s_all": [[row["cpu_seconds"] for row in r["forwards"]] for r in results],
            "forward_s_all": [[row["seconds"] for row in r["forwards"]] for r in results],
            "rss_with_model_mb": [r["rss_with_model_mb"] for r in results],
            "peak_rss_first_forward_mb": [r["forwards"][0]["peak_rss_so_far_mb"] for r in results],
            "peak_rss_mb": [r["peak_rss_mb"] for r in results],
        }
    fastest = min(row["forward_s_median"] for row in summary.values())
    fastest_cpu = min(row["forward_cpu_s_median"] for row in summary.values())
    for row in summary.values():
        row["time_over_fastest"] = round(row["forward_s_median"] / fastest, 3)
        row["cpu_time_over_fastest"] = round(row["forward_cpu_s_median"] / fastest_cpu, 3)
    return {
        "preset": args.preset,
        "image": [args.height, args.width],
        "threads": args.threads,
        "rounds": args.rounds,
        "load_average_1min": [round(v, 2) for v in load],
        "modes": summary,
        "detail": runs if args.detail else None,
    }


def emit(report: dict, out: Path | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
