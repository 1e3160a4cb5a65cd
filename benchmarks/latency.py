"""CPU forward latency and peak memory of GLIP-T, side by side with HF transformers' Grounding DINO-T.

One image (batch 1), random weights, fp32, eval mode, ``torch.no_grad()``, the 80 COCO class names as
the prompt (official evaluation caption: names joined by ". ", no trailing separator).

Each model runs in its own subprocess (this script re-invokes itself with ``--only glip|gdino``) so the
RSS high-water marks (``getrusage(RUSAGE_SELF).ru_maxrss``) do not mix. Prints JSON to stdout.

    python benchmarks/latency.py --repeats 3 --out latency.json
    python benchmarks/latency.py --preset tiny_random --height 320 --width 512 --repeats 1  # quick check

GLIP timings: the headline ``full`` numbers time a plain ``model(...)`` call (+ ``model.postprocess``);
the per-component split comes from a second, piecewise pass (encode_images, encode_text, then each head
block's fusion / text layer / DyConv, predictors, post-processing), checked to give the same logits.
With random weights almost no score passes the 0.05 pre-NMS threshold, so the post-processing is nearly
free; ``postprocess_saturated`` re-runs it on random N(-2, 2^2) token logits (the 1000-candidate cap is
reached on every level), an upper bound for a real model.

The machine may be shared: each timed run records the CPU time other processes used meanwhile
(/proc/stat); a run where they used more than 5 % of a core is marked contended and, up to
``--retries`` times, repeated. Medians are over the uncontended runs (all runs if none was clean).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VOCAB = REPO / "glip" / "assets" / "bert-base-uncased-vocab.txt"

COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# a run is "contended" when the rest of the machine used more than this many CPU-seconds per second of it
CONTENDED_SHARE = 0.05

GLIP_COMPONENTS = (
    "backbone_fpn",
    "text_encoder",
    "fusion",
    "text_layers",
    "dyconv",
    "predictors",
    "postprocess",
)


# ---------------------------------------------------------------------------------------------- helpers
def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """High-water mark of this process's RSS in MB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def caption_and_spans() -> tuple[str, list[tuple[int, int]]]:
    caption, spans = "", []
    for i, name in enumerate(COCO_NAMES):
        spans.append((len(caption), len(caption) + len(name)))
        caption += name + (". " if i < len(COCO_NAMES) - 1 else "")
    return caption, spans


def tokenize(max_length: int | None) -> tuple[Any, dict[int, list[int]], int]:
    """-> (BatchEncoding (1, T) with offsets, label (1-based) -> token positions, number of real tokens)."""
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab_file=str(VOCAB))
    caption, spans = caption_and_spans()
    kwargs: dict[str, Any] = {"return_tensors": "pt", "return_offsets_mapping": True}
    if max_length is not None:
        kwargs.update(max_length=max_length, padding="max_length", truncation=True)
    encoding = tokenizer(caption, **kwargs)
    offsets = encoding.pop("offset_mapping")[0].tolist()
    mask = encoding["attention_mask"][0].tolist()
    label_to_tokens: dict[int, list[int]] = {}
    for label, (beg, end) in enumerate(spans, start=1):
        label_to_tokens[label] = [
            pos for pos, (a, b) in enumerate(offsets) if mask[pos] and b > a and a < end and b > beg
        ]
    return encoding, label_to_tokens, int(sum(mask))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def system_busy_s() -> float:
    """CPU seconds all processes of the machine have used since boot (Linux /proc/stat)."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One timed run. other_cpu_s: CPU time the rest of the machine used meanwhile."""

    value: Any
    wall_s: float
    cpu_s: float
    other_cpu_s: float

    @property
    def contended(self) -> bool:
        return self.other_cpu_s > CONTENDED_SHARE * self.wall_s


def measure(fn: Callable[[], Any]) -> Run:
    busy, cpu, start = system_busy_s(), time.process_time(), time.perf_counter()
    value = fn()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Run(value, wall, cpu, (system_busy_s() - busy) - cpu)


def repeat(fn: Callable[[], Any], repeats: int, retries: int) -> list[Run]:
    """Run ``fn`` until ``repeats`` uncontended runs, with at most ``retries`` extra attempts."""
    runs: list[Run] = []
    while sum(not r.contended for r in runs) < repeats and len(runs) < repeats + retries:
        runs.append(measure(fn))
    return runs


def run_info(runs: list[Run]) -> dict[str, Any]:
    return {
        "wall_s": [round(r.wall_s, 3) for r in runs],
        "cpu_s": [round(r.cpu_s, 2) for r in runs],
        "other_processes_cpu_s": [round(r.other_cpu_s, 2) for r in runs],
        "contended": [r.contended for r in runs],
    }


def summarize(values: list[float], runs: list[Run] | None = None) -> dict[str, Any]:
    """Median over the uncontended runs (over all runs when every one was contended), and all runs."""
    clean = [v for v, r in zip(values, runs) if not r.contended] if runs is not None else values
    return {"median_s": round(statistics.median(clean or values), 4), "runs_s": [round(v, 4) for v in values]}


def top_ops(prof: Any, limit: int = 12) -> list[dict[str, Any]]:
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1.0
    return [
        {
            "op": e.key,
            "self_ms": round(e.self_cpu_time_total / 1000, 1),
            "share": round(e.self_cpu_time_total / total, 3),
            "calls": e.count,
        }
        for e in rows[:limit]
    ]


# ------------------------------------------------------------------------------------------------ GLIP
def run_glip(args: argparse.Namespace) -> dict[str, Any]:
    importlib.import_module("glip")  # before torch, as a user would: glip asks torch for huge pages
    import torch

    from glip.config import get_preset
    from glip.memory import large_forward
    from glip.models.dyhead import ConvNorm
    from glip.models.glip import GLIPOutput, build_model
    from glip.models.head import HeadOutput
    from glip.preprocess import ImageBatch, padded_size

    rss_start = rss_mb()
    # a code-path variant of this benchmark (not a library setting): the deformable conv's other CPU path
    ConvNorm.deform_impl = os.environ.get("GLIP_BENCH_DEFORM_IMPL", ConvNorm.deform_impl)
    config = get_preset(args.preset)
    torch.manual_seed(0)
    model, build_s = timed(lambda: build_model(config).eval())
    encoding, label_to_tokens, num_tokens = tokenize(config.text.max_query_len)
    input_ids, attention_mask = encoding["input_ids"], encoding["attention_mask"]
    pad_h, pad_w = padded_size(args.height, args.width, config.input.size_divisibility)
    images = ImageBatch(torch.randn(1, 3, pad_h, pad_w), [(args.height, args.width)])
    rss_before = rss_mb()
    peak_before = peak_rss_mb()

    def full() -> dict[str, float]:
        out, forward_s = timed(lambda: model(images, input_ids, attention_mask))
        _, post_s = timed(lambda: model.postprocess(out, label_to_tokens))
        return {"forward": forward_s, "forward_postprocess": forward_s + post_s}

    head = model.head

    last: dict[str, GLIPOutput] = {}

    def piecewise() -> dict[str, float]:
        # the blocks are called one by one, so the allocator setting of GLIP.forward (glip/memory.py) is
        # applied here around the whole pass, as in the plain forward
        with large_forward(images.tensors):
            return piecewise_pass()

    def piecewise_pass() -> dict[str, float]:
        t = dict.fromkeys(GLIP_COMPONENTS, 0.0)
        out = components_pass(timed, t)
        t["sum"] = sum(t[k] for k in GLIP_COMPONENTS)
        last["out"] = out  # only the latest output stays alive (keeping all would inflate the peak RSS)
        return t

    def components_pass(meter: Callable[[Callable[[], Any]], tuple[Any, float]], t: dict[str, float]) -> Any:
        """The forward piece by piece; ``meter(fn) -> (result, amount)`` adds each piece's amount (seconds,
        or FLOPs) to its component in ``t``."""
        fpn, t["backbone_fpn"] = meter(lambda: model.encode_images(images.tensors))
        text, t["text_encoder"] = meter(lambda: model.encode_text(input_ids, attention_mask))
        hidden, embedded, mask = text.hidden, text.embedded, text.mask
        if head.prompt_offset is not None:
            offset = head.prompt_offset[: hidden.shape[1]][None]
            hidden, embedded = hidden + offset, embedded + offset
        features, fused = fpn, hidden
        for block in head.blocks:
            if block.fusion is not None:
                (features, fused), dt = meter(lambda b=block, f=features, x=fused: b.fusion(f, x, mask))
                t["fusion"] += dt
            if block.text_layer is not None:
                fused, dt = meter(lambda b=block, x=fused: b.text_layer(x, mask))
                t["text_layers"] += dt
            features, dt = meter(lambda b=block, f=features: b.dyconv(f))
            t["dyconv"] += dt

        def predict() -> GLIPOutput:
            score_text = fused if head.fused_text_for_score else embedded
            head_out = HeadOutput(
                token_logits=head.token_scores(features, score_text),
                box_regression=[s(head.bbox_pred(f)) for s, f in zip(head.scales, features)],
                centerness=[head.centerness(f) for f in features],
                fused_text=score_text,
                features=features,
            )
            anchors = model.anchor_generator(fpn)
            return GLIPOutput(head_out, anchors, list(images.image_sizes), text, fpn)

        out, dt = meter(predict)
        t["predictors"] += dt
        _, t["postprocess"] = meter(lambda: model.postprocess(out, label_to_tokens))
        return out

    def counted(fn: Callable[[], Any]) -> tuple[Any, float]:
        from torch.utils.flop_counter import FlopCounterMode

        def baddbmm_in_place(_self_shape: Any, a_shape: Any, b_shape: Any, **_: Any) -> int:
            batch, rows, inner = a_shape
            return 2 * batch * rows * inner * b_shape[-1]  # as the counter's baddbmm (the add not counted)

        # the fusion accumulates its image output in place (baddbmm_), which the counter does not know
        in_place_ops = {torch.ops.aten.baddbmm_: baddbmm_in_place}
        with FlopCounterMode(display=False, custom_mapping=in_place_ops) as counter:
            result = fn()
        return result, float(counter.get_total_flops())

    with torch.no_grad():
        full()  # warm-up
        peak_one = peak_rss_mb()
        full_runs = repeat(full, args.repeats, args.retries)
        piecewise()  # warm-up
        piece_runs = repeat(piecewise, args.repeats, args.retries)
        out = last.pop("out")
        # the piecewise pass must reproduce the plain forward
        reference = model(images, input_ids, attention_mask)
        diff = max(
            float((a - b).abs().max()) for a, b in zip(reference.head.token_logits, out.head.token_logits)
        )
        dets = model.postprocess(reference, label_to_tokens)
        gen = torch.Generator().manual_seed(0)
        saturated = GLIPOutput(
            HeadOutput(
                [torch.randn(x.shape, generator=gen) * 2.0 - 2.0 for x in reference.head.token_logits],
                reference.head.box_regression,
                reference.head.centerness,
                reference.head.fused_text,
                reference.head.features,
            ),
            reference.anchors,
            reference.image_sizes,
            reference.text,
            reference.fpn,
        )
        saturated_dets = model.postprocess(saturated, label_to_tokens)  # also the warm-up
        saturated_runs = [timed(lambda: model.postprocess(saturated, label_to_tokens))[1] for _ in range(3)]
        profile = profile_glip_blocks(model, reference) if args.profile else None
        with large_forward(images.tensors):
            flops = dict.fromkeys(GLIP_COMPONENTS, 0.0)
            components_pass(counted, flops)
        flops["sum"] = sum(flops[k] for k in GLIP_COMPONENTS)

    result: dict[str, Any] = {
        "model": f"GLIP ({args.preset})",
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "build_s": round(build_s, 2),
        "text_tokens": num_tokens,
        "full_forward": summarize([r.value["forward"] for r in full_runs], full_runs),
        "full_forward_postprocess": summarize([r.value["forward_postprocess"] for r in full_runs], full_runs),
        "full_runs": run_info(full_runs),
        "forward_gflop_per_s": round(
            flops["sum"] / 1e9 / statistics.median([r.value["forward"] for r in full_runs]), 1
        ),
        "components": {
            k: summarize([r.value[k] for r in piece_runs], piece_runs) for k in (*GLIP_COMPONENTS, "sum")
        },
        "component_runs": run_info(piece_runs),
        # matmul / conv FLOPs (torch.utils.flop_counter: mm, bmm, addmm, baddbmm, convolution; grid_sample,
        # softmax, norms and element-wise ops are not counted) and the rate each component achieved
        "gflop": {k: round(v / 1e9, 1) for k, v in flops.items()},
        "gflop_per_s": {
            k: round(flops[k] / 1e9 / max(statistics.median([r.value[k] for r in piece_runs]), 1e-9), 1)
            for k in (*GLIP_COMPONENTS, "sum")
        },
        "piecewise_max_abs_logit_diff": diff,
        "detections_random_weights": len(dets[0]),
        "postprocess_saturated": summarize(saturated_runs),
        "detections_saturated": len(saturated_dets[0]),
        "rss_start_mb": round(rss_start, 1),
        "rss_before_forward_mb": round(rss_before, 1),
        "peak_rss_before_forward_mb": round(peak_before, 1),
        # high-water mark after the warm-up, i.e. one forward (+ post-processing): the comparable number
        "peak_rss_one_forward_mb": round(peak_one, 1),
        "peak_one_forward_minus_rss_before_mb": round(peak_one - rss_before, 1),
        # after all the timed runs (allocator fragmentation can push it up with the number of runs)
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if profile is not None:
        result["profile"] = profile
    return result


def profile_glip_blocks(model: Any, reference: Any) -> dict[str, Any]:
    """torch.profiler op tables of head block 0's fusion, text layer and DyConv on the real input sizes."""
    from torch.profiler import ProfilerActivity, profile

    block = model.head.blocks[0]
    features, text, mask = reference.fpn, reference.text.hidden, reference.text.mask
    parts: dict[str, Callable[[], Any]] = {"dyconv": lambda: block.dyconv(features)}
    if block.fusion is not None:
        parts["fusion"] = lambda: block.fusion(features, text, mask)
    if block.text_layer is not None:
        parts["text_layer"] = lambda: block.text_layer(text, mask)
    tables = {}
    for name, fn in parts.items():
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        tables[name] = top_ops(prof)
    return tables


# --------------------------------------------------------------------------------------- Grounding DINO
def run_gdino(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection

    rss_start = rss_mb()
    torch.manual_seed(0)
    config = GroundingDinoConfig()  # the grounding-dino-tiny architecture: Swin-T + BERT-base
    model, build_s = timed(lambda: GroundingDinoForObjectDetection(config).eval())
    # As the HF processor does: no padding to max length (our GLIP trims its padding too).
    encoding, _, num_tokens = tokenize(None)
    pixel_values = torch.randn(1, 3, args.height, args.width)
    pixel_mask = torch.ones(1, args.height, args.width, dtype=torch.long)
    rss_before = rss_mb()
    peak_before = peak_rss_mb()

    def forward() -> Any:
        return model(
            pixel_values=pixel_values,
            pixel_mask=pixel_mask,
            input_ids=encoding["input_ids"],
            token_type_ids=encoding["token_type_ids"],
            attention_mask=encoding["attention_mask"],
        )

    with torch.no_grad():
        forward()  # warm-up
        peak_one = peak_rss_mb()
        runs = repeat(forward, args.repeats, args.retries)
    return {
        "model": "HF GroundingDinoForObjectDetection(GroundingDinoConfig())",
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "build_s": round(build_s, 2),
        "text_tokens": num_tokens,
        "full_forward": summarize([r.wall_s for r in runs], runs),
        "full_runs": run_info(runs),
        "rss_start_mb": round(rss_start, 1),
        "rss_before_forward_mb": round(rss_before, 1),
        "peak_rss_before_forward_mb": round(peak_before, 1),
        # high-water mark after the warm-up, i.e. one forward (+ post-processing): the comparable number
        "peak_rss_one_forward_mb": round(peak_one, 1),
        "peak_one_forward_minus_rss_before_mb": round(peak_one - rss_before, 1),
        # after all the timed runs (allocator fragmentation can push it up with the number of runs)
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


# ------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument(
        "--retries",
        type=int,
        default=6,
        help="extra runs allowed to replace runs during which other processes used the CPU",
    )
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument(
        "--preset", default="glip_t", help="GLIP preset (glip_t; tiny_random for a quick run)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--profile", action="store_true", help="add torch.profiler op tables of head block 0")
    parser.add_argument("--skip-gdino", action="store_true", help="measure GLIP only")
    parser.add_argument(
        "--skip-variants",
        action="store_true",
        help="skip the GLIP runs with other allocator settings (GLIP_MEMORY_RELEASE=never, =stages; map at 1 MB; GLIP_HUGE_PAGES=0)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated GLIP variants to run beside the default (of {', '.join(VARIANTS)})",
    )
    parser.add_argument("--only", choices=("glip", "gdino"), default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# the same forward with other allocator settings: glibc's usual behaviour (glip/memory.py off), the old 1 MB map
# threshold, "stages", without torch's transparent huge pages; and the fastest mode with the deformable conv's
# other CPU path (grid_sample, the default before 2026-12-07)
VARIANTS: dict[str, dict[str, str]] = {
    "release_never": {"GLIP_MEMORY_RELEASE": "never"},
    # the default is "map" at 16 MB; the 1 MB threshold was the default before 2026-12-07
    "map_1mb": {"GLIP_MEMORY_RELEASE": "map", "GLIP_MEMORY_MAP_THRESHOLD": str(1 << 20)},
    "release_stages": {"GLIP_MEMORY_RELEASE": "stages"},
    # glip asks torch for transparent huge pages by default (glip/__init__.py); this turns that off
    "no_huge_pages": {"GLIP_HUGE_PAGES": "0"},
    "never_grid_sample": {"GLIP_MEMORY_RELEASE": "never", "GLIP_BENCH_DEFORM_IMPL": "grid_sample"},
}
CODE_PATH_VARIANTS = ("never_grid_sample",)


def matmul_peak(threads: int, size: int = 2048, repeats: int = 10) -> dict[str, Any]:
    """fp32 GEMM rate of this machine: best of ``repeats`` (size x size) @ (size x size) on ``threads``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)  # warm-up
        best = min(timed(lambda: torch.mm(a, b))[1] for _ in range(repeats))
    finally:
        torch.set_num_threads(before)
    return {"size": size, "threads": threads, "gflop_per_s": round(2 * size**3 / best / 1e9, 1)}


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(which: str, argv: list[str], extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **(extra_env or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--only", which]
    busy, own, start = system_busy_s(), children_cpu_s(), time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, env=env, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{which} benchmark failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # CPU time other processes used while this child ran: well above ~0 means the timings are contended.
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["other_processes_cpu_s"] = round((system_busy_s() - busy) - (children_cpu_s() - own), 1)
    return result


def git_state() -> dict[str, Any]:
    """Commit of the checkout and the uncommitted files under glip/ (the timings depend on the code)."""

    def git(*cmd: str) -> str:
        proc = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    changed = [line[3:] for line in git("status", "--porcelain", "glip").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "glip_uncommitted": changed}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.only is not None:
        import torch

        if args.threads is not None:
            torch.set_num_threads(args.threads)
        result = run_glip(args) if args.only == "glip" else run_gdino(args)
        result["threads"] = torch.get_num_threads()
        print(json.dumps(result))
        return

    import torch

    child_argv = [
        f"--repeats={args.repeats}",
        f"--retries={args.retries}",
        f"--height={args.height}",
        f"--width={args.width}",
        f"--preset={args.preset}",
        *([f"--threads={args.threads}"] if args.threads is not None else []),
        *(["--profile"] if args.profile else []),
    ]
    threads = args.threads or torch.get_num_threads()
    peak_start = matmul_peak(threads)
    report: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": args.threads or torch.get_num_threads(),
            "platform": sys.platform,
        },
        "code": git_state(),
        "image_hw": [args.height, args.width],
        "prompt": "the 80 COCO class names joined by '. '",
        "glip": run_child("glip", child_argv),
    }
    if not args.skip_variants:
        chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = sorted(set(chosen) - set(VARIANTS))
        if unknown:
            raise SystemExit(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
        report["glip_variants"] = {}
        for name in chosen:
            extra_env = VARIANTS[name]
            child = run_child("glip", child_argv, extra_env)
            report["glip_variants"][name] = {
                "env": extra_env,
                "full_forward_postprocess_median_s": child["full_forward_postprocess"]["median_s"],
                "peak_rss_one_forward_mb": child["peak_rss_one_forward_mb"],
                "peak_rss_mb": child["peak_rss_mb"],
                "rss_before_forward_mb": child["rss_before_forward_mb"],
                "other_processes_cpu_s": child["other_processes_cpu_s"],
            }
    # the default mode, the fastest mode and the machine's matmul peak side by side
    peak_end = matmul_peak(threads)
    peak = max(peak_start["gflop_per_s"], peak_end["gflop_per_s"])
    glip_flop = report["glip"]["gflop"]["sum"]
    modes = {"default": report["glip"]["full_forward_postprocess"]["median_s"]}
    peaks = {"default": report["glip"]["peak_rss_one_forward_mb"]}
    code_paths = {}
    for name, row in report.get("glip_variants", {}).items():
        if (
            name in CODE_PATH_VARIANTS
        ):  # another implementation, not an allocator mode: beside, not in, the modes
            code_paths[name] = row["full_forward_postprocess_median_s"]
            continue
        modes[name] = row["full_forward_postprocess_median_s"]
        peaks[name] = row["peak_rss_one_forward_mb"]
    fastest = min(modes, key=modes.__getitem__)
    report["side_by_side"] = {
        "matmul_peak_gflop_per_s": peak,
        "matmul_peak_runs": [peak_start, peak_end],
        "forward_gflop": glip_flop,
        "forward_at_peak_s": round(glip_flop / peak, 2),
        "modes": {
            name: {
                "forward_postprocess_s": seconds,
                "peak_rss_one_forward_mb": peaks[name],
                "gflop_per_s": round(glip_flop / seconds, 1),
                "share_of_matmul_peak": round(glip_flop / seconds / peak, 3),
                "time_over_fastest": round(seconds / modes[fastest], 3),
            }
            for name, seconds in modes.items()
        },
        "fastest": fastest,
        "code_paths": {
            name: {
                "forward_postprocess_s": seconds,
                "time_over_fastest_mode": round(seconds / modes[fastest], 3),
            }
            for name, seconds in code_paths.items()
        },
        "components_gflop_per_s": report["glip"]["gflop_per_s"],
        "components_share_of_peak": {k: round(v / peak, 3) for k, v in report["glip"]["gflop_per_s"].items()},
    }
    if not args.skip_gdino:
        report["gdino"] = run_child("gdino", child_argv)
        glip_s = report["glip"]["full_forward_postprocess"]["median_s"]
        gdino_s = report["gdino"]["full_forward"]["median_s"]
        report["ratio_glip_over_gdino"] = {
            "latency": round(glip_s / gdino_s, 3),
            "latency_fastest_mode": round(modes[fastest] / gdino_s, 3),
            "peak_rss_one_forward": round(
                report["glip"]["peak_rss_one_forward_mb"] / report["gdino"]["peak_rss_one_forward_mb"], 3
            ),
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
