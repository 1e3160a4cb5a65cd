"""A bounded load test of ``glip serve``: N concurrent clients on 127.0.0.1 against sequential single
requests, in the same run, on the same server (uvicorn in a background thread).

Each client posts the same example image with the demo model's 30 class names. Reported per phase:
requests/s, p50 / p95 latency and the batch sizes the server formed (from ``GET /health``). The run is
bounded by a fixed request count and a time limit (requests not sent within it are counted as skipped).

    python benchmarks/serve.py --clients 8 --requests 10 --out benchmarks/results/serve.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def batch_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    keys = sorted(set(before) | set(after), key=int)
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k, 0) - before.get(k, 0)}


def run_phase(url: str, image: bytes, classes: str, clients: int, per_client: int, deadline: float) -> dict:
    import httpx

    stats_before = httpx.get(url + "/health").json()["stats"]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    skipped = 0
    lock = threading.Lock()

    def client(_: int) -> None:
        nonlocal skipped
        with httpx.Client(timeout=120) as http:
            for _ in range(per_client):
                if time.monotonic() > deadline:
                    with lock:
                        skipped += 1
                    continue
                started = time.perf_counter()
                response = http.post(
                    url + "/detect",
                    files={"image": ("example.png", image, "image/png")},
                    data={"classes": classes},
                )
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    stats_after = httpx.get(url + "/health").json()["stats"]
    return {
        "clients": clients,
        "requests": len(latencies),
        "skipped_time_limit": skipped,
        "status_codes": statuses,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 3),
        "latency_p50_ms": round(1000 * percentile(latencies, 50), 1),
        "latency_p95_ms": round(1000 * percentile(latencies, 95), 1),
        "batch_sizes": batch_delta(stats_before["batch_sizes"], stats_after["batch_sizes"]),
        "predict_call_sizes": batch_delta(
            stats_before["predict_call_sizes"], stats_after["predict_call_sizes"]
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=10, help="requests per client")
    parser.add_argument(
        "--sequential", type=int, default=None, help="sequential requests (clients x requests)"
    )
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds per phase")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serve.json"))
    args = parser.parse_args(argv)

    import torch

    from glip.predictor import GLIPPredictor
    from glip.serve.app import create_app
    from glip.serve.server import BackgroundServer
    from glip.weights.demo import DEMO_EXAMPLES_DIR, DEMO_MODEL_DIR, DEMO_PROMPT

    predictor = GLIPPredictor.from_pretrained(str(DEMO_MODEL_DIR), device=args.device)
    image = (DEMO_EXAMPLES_DIR / "test_000002.png").read_bytes()
    app = create_app(predictor, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, model_name="demo")
    sequential = args.sequential or args.clients * args.requests
    with BackgroundServer(app) as server:
        run_phase(server.url, image, DEMO_PROMPT, 1, 2, time.monotonic() + args.time_limit)  # warm-up
        single = run_phase(server.url, image, DEMO_PROMPT, 1, sequential, time.monotonic() + args.time_limit)
        concurrent = run_phase(
            server.url, image, DEMO_PROMPT, args.clients, args.requests, time.monotonic() + args.time_limit
        )
    result: dict[str, Any] = {
        "model": "demo (tiny preset, 320x320 example image, 30 class names)",
        "device": str(predictor.device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "server": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
        "sequential": single,
        "concurrent": concurrent,
        "speedup_requests_per_s": round(concurrent["requests_per_s"] / single["requests_per_s"], 3),
    }
    text = json.dumps(result, indent=1)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
