"""Training throughput on CPU: images/s and peak memory, 1 vs 2 processes (torchrun, gloo).

    python benchmarks/train_throughput.py --presets tiny glip_t --size 320 --steps 6

Prints JSON. Each (preset, processes) pair runs in its own child process (``torch.distributed.run`` for
2 processes) so peak memory does not mix; the first ``--warmup`` steps are not timed. Random weights for
``glip_t``; the ``tiny`` preset loads its offline pretrained parts. Synthetic images of --size x --size with
two objects each (glip.data.toy), batch --batch-size per process.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, os, resource, sys, time, dataclasses, torch
from glip.config import get_preset
from glip.data.toy import SquaresDataset
from glip.engine.train import TrainConfig, fit
from glip.models.glip import build_model
preset, size, steps, warmup, batch, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
torch.manual_seed(0)
model = build_model(get_preset(preset))
dataset = SquaresDataset(64, size=size)
times = []
from glip.losses.criterion import Criterion
criterion = Criterion()
def timed(m, b):
    times.append(time.perf_counter())
    return criterion(m, b)
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
config = TrainConfig(out_dir=out, max_steps=steps, batch_size=batch, progress=False, ckpt_every=0, log_every=10**6)
fit(model, dataset, config, criterion=timed)
times.append(time.perf_counter())
rank = int(os.environ.get("RANK", "0"))
world = int(os.environ.get("WORLD_SIZE", "1"))
measured = times[warmup:]
seconds = measured[-1] - measured[0]
result = {"rank": rank, "world_size": world, "steps_timed": len(measured) - 1, "seconds": seconds,
          "images_per_s": (len(measured) - 1) * batch * world / seconds,
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_after_build_mb": rss_before}
with open(os.path.join(out, f"result_{rank}.json"), "w") as handle:
    json.dump(result, handle)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(preset: str, processes: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as out:
        script = Path(out) / "child.py"
        script.write_text(CHILD)
        cmd = [sys.executable]
        if processes > 1:
            cmd += ["-m", "torch.distributed.run", "--nproc-per-node", str(processes)]
            cmd += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
        cmd += [
            str(script),
            preset,
            str(args.size),
            str(args.steps),
            str(args.warmup),
            str(args.batch_size),
            out,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads // processes))}
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        wall = time.perf_counter() - start
        results = [json.loads(p.read_text()) for p in sorted(Path(out).glob("result_*.json"))]
    main = results[0]
    return {
        "preset": preset,
        "processes": processes,
        "threads_per_process": max(1, args.threads // processes),
        "batch_per_process": args.batch_size,
        "image_size": args.size,
        "steps_timed": main["steps_timed"],
        "images_per_s": round(main["images_per_s"], 3),
        "peak_rss_mb_per_process": [round(r["peak_rss_mb"]) for r in results],
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["tiny", "glip_t"])
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    runs = [run(preset, n, args) for preset in args.presets for n in args.processes]
    report = {"benchmark": "train_throughput", "cpu_count": os.cpu_count(), "runs": runs}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
