"""ONNX export of GLIP-T (random weights): export time, file size, onnxruntime vs PyTorch CPU latency.

Batch 1 at 800x1333 (padded 800x1344), fp32, the 80 COCO names as one prompt (official evaluation caption,
names joined by ". "). Both runtimes time the same thing: the whole forward from the padded image and the
token ids to the raw head outputs (glip's post-processing is the same code after either). Writes JSON:

    python benchmarks/export_onnx.py --out benchmarks/results/export_onnx.json
    python benchmarks/export_onnx.py --preset tiny_random --height 320 --width 512  # quick check

Heavy: GLIP-T is ~1 GB of fp32 weights; the trace + ONNX conversion takes many minutes on 2 cores.
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
    parser.add_argument("--preset", default="glip_t")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument(
        "--keep", type=Path, default=None, help="export into this folder (default: a temp one)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "export_onnx.json")
    args = parser.parse_args(argv)

    from glip.config import get_preset
    from glip.export.onnx import ExportableGLIP, OnnxGLIP, export_summary, to_onnx
    from glip.models.glip import build_model
    from glip.text.prompts import build_detection_prompt
    from glip.text.tokenizer import tokenize_captions

    torch.manual_seed(0)
    model = build_model(get_preset(args.preset)).eval()
    parameters = sum(p.numel() for p in model.parameters())
    pad = lambda v: -(-v // 32) * 32  # noqa: E731
    images = torch.randn(1, 3, pad(args.height), pad(args.width))
    prompt = build_detection_prompt(
        list(COCO_NAMES), list(range(1, 81)), max_len=model.config.text.max_query_len
    )
    tokens = tokenize_captions([prompt.caption], max_length=model.config.text.max_query_len, pad_to_max=False)
    result: dict[str, object] = {
        "preset": args.preset,
        "parameters": parameters,
        "input": [1, 3, *images.shape[-2:]],
        "tokens": int(tokens.input_ids.shape[1]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="glip-onnx-") as tmp:
        directory = args.keep or Path(tmp)
        start = time.perf_counter()
        to_onnx(model, directory, opset=args.opset, image_size=(320, 320), num_tokens=16)
        result["export_seconds"] = round(time.perf_counter() - start, 1)
        summary = export_summary(directory)
        result["onnx_mb"] = round(summary["onnx_bytes"] / 2**20, 1)
        result["opset"] = summary["opset"]
        print(json.dumps(result), flush=True)

        wrapper = ExportableGLIP(model).eval()
        ids, mask = tokens.input_ids, tokens.attention_mask
        times_torch, times_ort = [], []
        with torch.no_grad():
            reference = wrapper(images, ids, mask)  # warm-up
            for _ in range(args.repeats):
                start = time.perf_counter()
                wrapper(images, ids, mask)
                times_torch.append(time.perf_counter() - start)
        runner = OnnxGLIP(directory)
        got = runner.forward(images, ids, mask)  # warm-up
        for _ in range(args.repeats):
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
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
