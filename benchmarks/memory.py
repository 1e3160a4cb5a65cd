"""Where the memory of one GLIP forward goes: process RSS per stage, sampled while the model runs.

GLIP-T (random weights, fp32, eval, ``torch.no_grad()``) at 800x1333 with the 80 COCO names as the prompt,
the setting of ``benchmarks/latency.py``. A background thread reads ``/proc/self/statm`` every millisecond;
forward hooks name the running stage (backbone, FPN, text encoder, each head block's fusion / BERT layer /
DyConv, predictors, post-processing), so each stage gets the RSS at its start and the highest RSS seen
while it ran. Prints JSON.

    python benchmarks/memory.py                      # the library as it ships
    python benchmarks/memory.py --release never      # glibc's usual allocator behaviour
    python benchmarks/memory.py --preset tiny --height 320 --width 512   # quick check

``--release`` sets ``glip.memory.RELEASE`` for this run: ``auto`` (the default: during a large no-grad CPU
forward, blocks above 1 MB are mapped on allocation and unmapped when freed, see ``glip/memory.py``) or
``never`` (glibc's usual behaviour). Each configuration should run in its own process (the RSS high-water
mark only grows); ``--compare`` does that for both settings and prints their peaks and forward times.
"""

from __future__ import annotations

import argparse
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
            start = time.perf_counter()
            output = model(images, encoding["input_ids"], encoding["attention_mask"])
            sampler.enter("postprocess")
            detections = model.postprocess(output, label_to_tokens)
            seconds = time.perf_counter() - start
            sampler.enter("idle")
            del output, detections
            rows.append(
                {
                    "seconds": round(seconds, 2),
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
    parser.add_argument("--release", choices=("auto", "never"), default="auto")
    parser.add_argument("--compare", action="store_true", help="run auto and never, each in its own process")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if not args.compare:
        emit(run(args), args.out)
        return
    summary = {}
    for release in ("never", "auto"):
        command = [sys.executable, __file__, "--preset", args.preset, "--height", str(args.height)]
        command += ["--width", str(args.width), "--threads", str(args.threads)]
        command += ["--repeats", str(args.repeats), "--release", release]  # no --out: the child prints
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        summary[release] = {
            "rss_with_model_mb": result["rss_with_model_mb"],
            "peak_rss_mb": result["peak_rss_mb"],
            "forward_seconds": [row["seconds"] for row in result["forwards"]],
            "detail": result,
        }
    emit(summary, args.out)


def emit(report: dict, out: Path | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
