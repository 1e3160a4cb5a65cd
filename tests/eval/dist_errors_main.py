"""Under torchrun: a bad input met by one rank, or a failure of rank 0's scoring, is raised on every rank
(nobody waits forever). Prints one line per check and rank."""

from __future__ import annotations

import sys
from pathlib import Path

from glip.engine.distributed import cleanup, init_distributed
from glip.eval.common import EvalError, EvalResult, rank_info, run_on_main
from glip.eval.inference import WorkItem, run_inference
from glip.eval.options import EvalOptions

if __name__ == "__main__":
    init_distributed("cpu")
    rank = rank_info().rank
    items = [WorkItem(key=i, path=Path(f"{i}.png"), size=None, where=f"images[{i}]") for i in range(4)]

    def predict(batch):
        if batch[0].key == 3:  # rank 1's second image
            raise EvalError(f"{batch[0].where}: cannot read image")
        return [{"id": item.key, "boxes": [], "scores": [], "labels": []} for item in batch]

    try:
        run_inference(items, predict, EvalOptions(progress=False))
        print(f"rank {rank}: no error")
    except EvalError as exc:
        print(f"rank {rank}: EvalError {exc}")

    def failing() -> EvalResult:
        raise ValueError("scoring failed")

    try:
        run_on_main(failing)
    except (ValueError, RuntimeError) as exc:
        print(f"rank {rank}: {type(exc).__name__} {exc}")
    options = EvalOptions(progress=False)
    records = run_inference(items, lambda b: [{"id": i.key, "r": rank} for i in b], options)
    print(f"rank {rank}: gathered {sorted(records)} from ranks {sorted({r['r'] for r in records.values()})}")
    cleanup()
    sys.exit(0)
