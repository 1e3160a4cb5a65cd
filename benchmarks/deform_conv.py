"""The DyHead's modulated deformable 3x3 conv on CPU: the gather path against the grid_sample path, side by side.

    python benchmarks/deform_conv.py     # -> benchmarks/results/deform_conv.json (~1 min, 2 cores)

One conv of a GLIP-T head block (256 -> 256 channels) on each pyramid level of an 800 x 1333 image (P3 100 x 167
... P7 7 x 11), no autograd; and forward + backward at a training size of the demo models (4 x 128 x 48 x 48).
Random inputs with offsets of about one pixel; the two paths alternate over ``--rounds`` (best of each).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
LEVELS = ((100, 167), (50, 84), (25, 42), (13, 21), (7, 11))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "deform_conv.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from glip.fileio import atomic_write_text
    from glip.models import dyhead

    paths = {"gather": dyhead.deform_conv3x3_gather, "grid_sample": dyhead.deform_conv3x3_grid_sample}
    generator = torch.Generator().manual_seed(0)

    def inputs(batch: int, channels: int, height: int, width: int, grad: bool) -> list[torch.Tensor]:
        tensors = [
            torch.randn(batch, channels, height, width, generator=generator),
            torch.randn(batch, 18, height, width, generator=generator),
            torch.rand(batch, 9, height, width, generator=generator),
            torch.randn(channels, channels, 3, 3, generator=generator) * 0.02,
            torch.randn(channels, generator=generator),
        ]
        return [t.requires_grad_(grad) for t in tensors]

    def best(fn, tensors: list[torch.Tensor], backward: bool = False) -> float:  # type: ignore[no-untyped-def]
        def once() -> None:
            out = fn(*tensors, 1)
            if backward:
                out.square().mean().backward()

        once()  # warm-up
        times = []
        for _ in range(args.rounds):
            tick = time.perf_counter()
            once()
            times.append(time.perf_counter() - tick)
        return min(times)

    inference: dict[str, dict[str, float]] = {name: {} for name in paths}
    for height, width in LEVELS:
        tensors = inputs(1, 256, height, width, grad=False)
        for name, fn in paths.items():
            with torch.no_grad():
                inference[name][f"{height}x{width}"] = round(best(fn, tensors), 4)
    tensors = inputs(4, 128, 48, 48, grad=True)
    training = {name: round(best(fn, tensors, backward=True), 4) for name, fn in paths.items()}
    totals = {name: round(sum(levels.values()), 4) for name, levels in inference.items()}
    report = {
        "command": "python benchmarks/deform_conv.py",
        "threads": args.threads,
        "rounds": args.rounds,
        "inference_s_per_level": inference,
        "inference_s_all_levels": totals,
        "gather_speedup_inference": round(totals["grid_sample"] / totals["gather"], 2),
        "training_forward_backward_s": training,
        "gather_speedup_training": round(training["grid_sample"] / training["gather"], 2),
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
