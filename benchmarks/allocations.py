"""How much memory one GLIP forward allocates: tensor bytes per op, per module and per block size.

GLIP-T (random weights, seed 0, fp32, eval, ``torch.no_grad()``) at 800x1333 with the 80 COCO names, the
setting of ``benchmarks/latency.py``. A ``TorchDispatchMode`` sees every aten op; each output tensor whose
storage is new (not a view, not an input written in place or through ``out=``) counts as an allocation of its
storage's size, and a ``weakref.finalize`` on the storage counts it free again. Prints JSON: the total
allocated ("traffic": what glibc's allocator must hand out during one forward), the peak of live tensor
bytes, the traffic per block size (glibc maps blocks above its mmap threshold, 1 MB in the library's default
``map`` mode, and the kernel page-faults every fresh mapping) and the largest contributors by op and module.

    python benchmarks/allocations.py --out benchmarks/results/allocations.json
    python benchmarks/allocations.py --preset tiny --height 320 --width 512   # quick check

Allocations inside a kernel (e.g. a GEMM's packing buffers) are not seen; they are small next to these.
The dispatch mode slows the forward down; times are not the point here (``benchmarks/latency.py``).
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

# benchmarks/ is on sys.path when this runs as a script
from latency import tokenize

MB = 1 << 20
SIZES = ((1 * MB, "< 1 MB"), (4 * MB, "1-4 MB"), (16 * MB, "4-16 MB"), (32 * MB, "16-32 MB"))


def size_class(nbytes: int) -> str:
    for limit, name in SIZES:
        if nbytes < limit:
            return name
    return ">= 32 MB"


def measure(preset: str, height: int, width: int, threads: int) -> dict[str, Any]:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    import glip.memory
    from glip.config import get_preset
    from glip.models.glip import build_model
    from glip.preprocess import ImageBatch, padded_size

    torch.set_num_threads(threads)
    glip.memory.RELEASE = "never"  # the allocator setting does not change what the model allocates
    torch.manual_seed(0)
    model = build_model(get_preset(preset)).eval()
    encoding, label_to_tokens, _ = tokenize(None)
    images = ImageBatch(torch.randn(1, 3, *padded_size(height, width, 32)), [(height, width)])

    stack: list[str] = []
    for name, module in model.named_modules():
        if 0 < name.count(".") + 1 <= 3:  # e.g. backbone.layers.0, head.blocks.3

            def enter(_module: Any, _args: Any, name: str = name) -> None:
                stack.append(name)

            def leave(_module: Any, _args: Any, _output: Any) -> None:
                stack.pop()

            module.register_forward_pre_hook(enter)
            module.register_forward_hook(leave)

    state = {"live": 0, "peak": 0, "count": 0}
    by_op: collections.Counter[str] = collections.Counter()
    by_module: collections.Counter[str] = collections.Counter()
    by_size: collections.Counter[str] = collections.Counter()
    count_by_size: collections.Counter[str] = collections.Counter()
    seen: set[int] = set()

    def freed(key: int, nbytes: int) -> None:
        seen.discard(key)
        state["live"] -= nbytes

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            if func.is_view:
                return out
            inputs = {
                a.untyped_storage().data_ptr()
                for a in list(args) + list((kwargs or {}).values())
                if isinstance(a, torch.Tensor)
            }
            for tensor in out if isinstance(out, (tuple, list)) else [out]:
                if not isinstance(tensor, torch.Tensor):
                    continue
                storage = tensor.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes == 0 or key in seen or key in inputs:
                    continue
                seen.add(key)
                weakref.finalize(storage, freed, key, nbytes)
                state["live"] += nbytes
                state["peak"] = max(state["peak"], state["live"])
                state["count"] += 1
                by_op[str(func.overloadpacket)] += nbytes
                by_module[stack[-1] if stack else "(top level)"] += nbytes
                by_size[size_class(nbytes)] += nbytes
                count_by_size[size_class(nbytes)] += 1
            return out

    with torch.no_grad(), Counter():
        output = model(images, encoding["input_ids"], encoding["attention_mask"])
        model.postprocess(output, label_to_tokens)
    total = sum(by_op.values())

    def top(counter: collections.Counter[str], n: int) -> dict[str, float]:
        return {name: round(nbytes / MB, 1) for name, nbytes in counter.most_common(n)}

    return {
        "preset": preset,
        "image": [height, width],
        "prompt_tokens": int(encoding["attention_mask"].sum()),
        "allocated_mb": round(total / MB, 1),
        "allocations": state["count"],
        "peak_live_tensors_mb": round(state["peak"] / MB, 1),
        "by_block_size_mb": {name: round(by_size[name] / MB, 1) for _, name in SIZES + ((0, ">= 32 MB"),)},
        "count_by_block_size": {name: count_by_size[name] for _, name in SIZES + ((0, ">= 32 MB"),)},
        "by_module_mb": top(by_module, 30),
        "by_op_mb": top(by_op, 20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="glip_t")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    result = measure(args.preset, args.height, args.width, args.threads)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    result["commit"] = commit.stdout.strip() or None
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        from glip.fileio import atomic_write_text

        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    sys.exit(main())
