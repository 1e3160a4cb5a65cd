"""Pseudo-labelling throughput: image-caption pairs per second for the ``tiny`` preset on CPU, 1 vs 2 processes.

A synthetic caption-only corpus (``glip synth``: ``--pairs`` scenes of ``--size`` px, the ``captions.jsonl``
split with 1-5 objects and 1-5 noun phrases per caption) is pseudo-labelled by a ``tiny`` teacher (its
pretrained backbone and text encoder, random head; ``bias0 = 0`` so the post-processing does its full work)
with the full pipeline of ``glip pseudo-label``: streaming input, noun phrases, grounding, per-phrase NMS,
shards with fsynced manifests, the merge and the statistics. Each process count runs under
``torch.distributed.run`` (gloo), one thread per process; every rank times the pipeline between two barriers
(model loading and start-up excluded) and reports its wall-clock and process CPU time. Pairs per second =
pairs / the slowest rank's wall-clock time.

    python benchmarks/pseudo_label.py                          # 48 pairs of 320 px, 1 and 2 processes
    python benchmarks/pseudo_label.py --pairs 96 --procs 1,2,4 --batch-size 4 --out pl.json

On a machine shared with other jobs, compare ``cpu_seconds`` too: two processes only help when two cores
are free (``os.sched_getaffinity`` and the 1-minute load average are recorded). Prints JSON to stdout.
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

REPO = Path(__file__).resolve().parents[1]


def _worker(args: argparse.Namespace) -> None:
    import torch

    from glip.engine.distributed import barrier, cleanup, init_distributed
    from glip.selftrain import PseudoLabelConfig, Teacher, pseudo_label, read_lines
    from glip.weights.loading import load_model

    torch.set_num_threads(1)
    info = init_distributed("cpu")
    teacher = Teacher(load_model(args.teacher, device="cpu"))
    teacher.prompt("a warm-up caption with a red circle")  # loads spaCy before the clock starts
    barrier()
    wall, cpu = time.perf_counter(), time.process_time()
    summary = pseudo_label(
        teacher,
        read_lines(args.captions),
        args.images,
        args.out_jsonl,
        PseudoLabelConfig(threshold=0.5, batch_size=args.batch_size, shard_size=args.shard_size),
        rank=info.rank,
        world_size=info.world_size,
    )
    timing = {
        "rank": info.rank,
        "wall_seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
    }
    barrier()
    Path(args.timing_dir, f"rank{info.rank}.json").write_text(json.dumps(timing))
    if summary is not None:
        Path(args.timing_dir, "stats.json").write_text(json.dumps(summary.stats.to_dict(with_phrases=False)))
    cleanup()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--size", type=int, default=320, help="image side (the tiny preset resizes to 320)")
    parser.add_argument("--procs", default="1,2", help="process counts to compare")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("teacher", "captions", "images", "out-jsonl", "timing-dir"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return

    import torch

    from glip.config import get_preset
    from glip.data.synthetic.writers import generate
    from glip.models.glip import build_model
    from glip.weights.loading import save_model

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    results = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        generate(tmp / "corpus", args.pairs, seed=0, size=args.size, split="train")
        torch.manual_seed(0)
        model = build_model(get_preset("tiny"))
        model.head.bias0.data.fill_(0.0)
        save_model(model, tmp / "teacher")
        stats = None
        for procs in [int(p) for p in args.procs.split(",")]:
            timing_dir = tmp / f"timing{procs}"
            timing_dir.mkdir()
            command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs)]
            command += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
            command += [str(Path(__file__).resolve()), "--worker", "--teacher", str(tmp / "teacher")]
            command += [
                "--captions",
                str(tmp / "corpus" / "captions.jsonl"),
                "--images",
                str(tmp / "corpus" / "images"),
            ]
            command += [
                "--out-jsonl",
                str(tmp / f"out{procs}" / "pseudo.jsonl"),
                "--timing-dir",
                str(timing_dir),
            ]
            command += ["--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size)]
            (tmp / f"out{procs}").mkdir()
            load = os.getloadavg()[0]
            subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True)
            ranks = [json.loads((timing_dir / f"rank{r}.json").read_text()) for r in range(procs)]
            wall = max(r["wall_seconds"] for r in ranks)
            results.append(
                {
                    "processes": procs,
                    "wall_seconds": round(wall, 3),
                    "pairs_per_second": round(args.pairs / wall, 3),
                    "cpu_seconds_per_rank": [round(r["cpu_seconds"], 3) for r in ranks],
                    "load_average_1min_before": round(load, 2),
                }
            )
            stats = json.loads((timing_dir / "stats.json").read_text())
            same = (tmp / f"out{procs}" / "pseudo.jsonl").read_bytes() == (
                tmp / "out1" / "pseudo.jsonl"
            ).read_bytes()
            results[-1]["output_equals_1_process"] = same
    report = {
        "benchmark": "glip pseudo-label throughput",
        "preset": "tiny",
        "device": "cpu",
        "threads_per_process": 1,
        "cpus_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "pairs": args.pairs,
        "image_size": args.size,
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
        "phrases_per_pair": round(stats["phrases"] / max(stats["pairs"], 1), 2) if stats else None,
        "results": results,
        "speedup": round(results[-1]["pairs_per_second"] / results[0]["pairs_per_second"], 2),
        "command": "python benchmarks/pseudo_label.py " + " ".join(sys.argv[1:]),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
