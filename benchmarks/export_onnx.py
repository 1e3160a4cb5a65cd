"""ONNX export of a glip model: export time, file size, onnxruntime vs PyTorch CPU latency.

Default: GLIP-T with random weights, batch 1 at 800x1333 (padded 800x1344), fp32, the 80 COCO names as one
prompt (official evaluation caption, names joined by ". "). Both runtimes time the same thing: the whole
forward from the padded image and the token ids to the raw head outputs (glip's post-processing is the same
code after either). The trace uses a small example (``--trace-size``, 320x320); height, width and token count
stay dynamic, so the timed size need not be the traced one. Writes JSON:

    python benchmarks/export_onnx.py --out benchmarks/results/export_onnx.json            # GLIP-T (heavy)
    python benchmarks/export_onnx.py --model random:glip_t --height 512 --width 512       # lighter run
    python benchmarks/export_onnx.py --model demo --height 320 --width 320 \
        --out benchmarks/results/export_onnx_tiny.json                                     # the tiny preset
    python benchmarks/export_onnx.py --model demo --onnx-dir DIR ...   # time an existing export of that model

Heavy: GLIP-T is ~1 GB of fp32 weights, and the trace + ONNX conversion of even the small presets takes
minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from latency import COCO_NAMES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="random:glip_t",
        help="random:PRESET (seed 0), demo, a saved directory (see glip detect)",
    )
    parser.add_argument("--trace-size", type=int, nargs=2, default=(320, 320), metavar=("H", "W"))
    parser.add_argument(
        "--onnx-dir", type=Path, default=None, help="an existing export of the same model: skip the export"
    )
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument(
        "--keep", type=Path, default=None, help="export into this folder (default: a temp one)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "export_onnx.json")
    args = parser.parse_args(argv)

    from glip.export.onnx import ExportableGLIP, OnnxGLIP, export_summary, to_onnx
    from glip.fileio import atomic_write_text
    from glip.text.prompts import build_detection_prompt
    from glip.text.tokenizer import tokenize_captions
    from glip.weights.resolve import resolve_model

    model = resolve_model(args.model, None, "cpu").eval()
    parameters = sum(p.numel() for p in model.parameters())
    pad = lambda v: -(-v // 32) * 32  # noqa: E731
    images = torch.randn(1, 3, pad(args.height), pad(args.width))
    prompt = build_detection_prompt(
        list(COCO_NAMES), list(range(1, 81)), max_len=model.config.text.max_query_len
    )
    tokens = tokenize_captions([prompt.caption], max_length=model.config.text.max_query_len, pad_to_max=False)
    result: dict[str, object] = {
        "model": args.model,
        "preset": model.config.name,
        "parameters": parameters,
        "input": [1, 3, *images.shape[-2:]],
        "tokens": int(tokens.input_ids.shape[1]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="glip-onnx-") as tmp:
        directory = args.onnx_dir or args.keep or Path(tmp)
        if args.onnx_dir is None:
            start = time.perf_counter()
            to_onnx(model, directory, opset=args.opset, image_size=tuple(args.trace_size), num_tokens=16)
            result["export_seconds"] = round(time.perf_counter() - start, 1)
        summary = export_summary(directory)
        result.setdefault("export_seconds", summary.get("export_seconds"))
        result["trace_example"] = summary.get("example")
        result["onnx_mb"] = round(summary["onnx_bytes"] / 2**20, 1)
        result["opset"] = summary["opset"]
        print(json.dumps(result), flush=True)

        wrapper = ExportableGLIP(model).eval()
        ids, mask = tokens.input_ids, tokens.attention_mask
        times_torch, times_ort = [], []
        runner = OnnxGLIP(directory, threads=torch.get_num_threads())
        with torch.no_grad():
            reference = wrapper(images, ids, mask)  # warm-ups
        got = runner.forward(images, ids, mask)
        for _ in range(args.repeats):  # alternating, so that a change in machine load hits both alike
            with torch.no_grad():
                start = time.perf_counter()
                wrapper(images, ids, mask)
                times_torch.append(time.perf_counter() - start)
            start = time.perf_counter()
            runner.forward(images, ids, mask)
            times_ort.append(time.perf_counter() - start)
        outputs = [*got["token_logits"], *got["box_regression"], *got["centerness"]]
        result["max_abs_diff"] = float(
            max(np.abs(o.numpy() - r.numpy()).max() for o, r in zip(outputs, reference))
        )
        result["pytorch_cpu_s"] = round(statistics.median(times_torch), 3)
        result["onnxruntime_cpu_s"] = round(statistics.median(times_ort), 3)
        result["pytorch_runs_s"] = [round(t, 3) for t in times_torch]
        result["onnxruntime_runs_s"] = [round(t, 3) for t in times_ort]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
