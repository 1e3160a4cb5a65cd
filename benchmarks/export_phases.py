"""Where the time of an ONNX export goes: torch.export, decompositions, translation, the ONNX optimiser.

Exports a randomly initialised preset (seed 0) with :func:`glip.export.onnx.to_onnx` and prints
``torch.onnx.export``'s own phase messages (``verbose=True``) with ``[phase]`` lines giving the seconds of
``torch.export.export`` and of the translation to ONNX, then the total. Run it under ``py-spy`` to see which
model lines the symbolic-shape reasoning spends its time on (how the export-time shape guards were found)::

    python benchmarks/export_phases.py --preset tiny_random
    py-spy record -o export.svg -- python benchmarks/export_phases.py --preset tiny_random
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny_random")
    parser.add_argument("--no-optimize", action="store_true", help="skip the ONNX optimiser pass")
    args = parser.parse_args()

    import torch.export as torch_export

    import glip.export.onnx as onnx_export
    from glip.config import get_preset
    from glip.models.glip import build_model

    torch.manual_seed(0)
    model = build_model(get_preset(args.preset)).eval()
    export, capture = torch.onnx.export, torch_export.export

    def verbose_export(*a, **k):  # type: ignore[no-untyped-def]
        return export(*a, **{**k, "verbose": True, "optimize": not args.no_optimize})

    def timed_capture(*a, **k):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        program = capture(*a, **k)
        print(f"[phase] torch.export.export {time.perf_counter() - start:.1f} s", flush=True)
        return program

    torch.onnx.export, torch_export.export = verbose_export, timed_capture
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        onnx_export.to_onnx(model, out)
        size = os.path.getsize(os.path.join(out, "model.onnx")) / 2**20
        print(f"[phase] total {time.perf_counter() - start:.1f} s, model.onnx {size:.1f} MB", flush=True)


if __name__ == "__main__":
    main()
