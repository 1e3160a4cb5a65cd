"""glip.runtime.flush_denormals: on when glip's model code is imported, for every torch CPU thread, opt-out
with GLIP_FLUSH_DENORMAL=0, and the official reference model's outputs are the same bits either way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# 4M denormal floats (bit pattern 1000 = 1.4e-42) times 1.0, on 2 threads: how many stay non-zero
COUNT_DENORMALS = """
import torch
{before}
import glip.models
x = torch.full((4_000_000,), 1000, dtype=torch.int32).view(torch.float32)
print((x * 1.0).count_nonzero().item())
"""


def _run(code: str, flush: str, *args: str, threads: int = 2) -> str:
    env = dict(os.environ, GLIP_FLUSH_DENORMAL=flush, OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True, timeout=300
    )
    return proc.stdout.strip().splitlines()[-1]


def test_denormals_flushed_on_every_thread_unless_opted_out():
    assert _run(COUNT_DENORMALS.format(before=""), "1") == "0"
    assert _run(COUNT_DENORMALS.format(before=""), "0") == "4000000"
    # the reason it happens at import: once torch's pool exists, a call reaches the calling thread only
    late = int(_run(COUNT_DENORMALS.format(before="torch.ones(4_000_000).mul(2)"), "1"))
    assert 0 < late < 4_000_000


REFERENCE_FORWARD = """
import sys, torch, json
from pathlib import Path
from glip import load_model
from glip.preprocess import ImageBatch
from glip.weights.yaml_config import config_from_yaml
ref = Path(sys.argv[1])
config = config_from_yaml(ref / "reduced_config.yaml", bert=json.loads((ref / "reduced_bert_config.json").read_text()))
model = load_model(ref / "reduced_glip_state_dict.pth", config=config)
inputs = torch.load(ref / "reduced_glip_inputs.pth", weights_only=True)
batch = ImageBatch(inputs["batched_images"], [tuple(inputs["image_sizes_hw"][0].tolist())])
with torch.no_grad():
    out = model(batch, inputs["input_ids"], inputs["attention_mask"])
tensors = [*out.head.token_logits, *out.head.box_regression, *out.head.centerness, *out.fpn]
torch.save(tensors, sys.argv[2])
print("saved")
"""


def test_reference_outputs_bit_identical_with_and_without(reference_dir, tmp_path):
    on, off = tmp_path / "on.pt", tmp_path / "off.pt"
    _run(REFERENCE_FORWARD, "1", str(reference_dir), str(on), threads=1)
    _run(REFERENCE_FORWARD, "0", str(reference_dir), str(off), threads=1)
    flushed, kept = torch.load(on, weights_only=True), torch.load(off, weights_only=True)
    assert len(flushed) == len(kept) > 0
    for a, b in zip(flushed, kept):
        assert torch.equal(a, b)


def _thp_after(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "GLIP_HUGE_PAGES")}
    command = [sys.executable, "-c", code + "; import os; print(os.environ.get('THP_MEM_ALLOC_ENABLE'))"]
    done = subprocess.run(command, capture_output=True, text=True, env={**clean, **env}, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_import_glip_asks_torch_for_huge_pages():
    """glip/__init__.py sets THP_MEM_ALLOC_ENABLE=1 before torch is imported (torch reads it once), unless
    GLIP_HUGE_PAGES=0 or the user set the variable; after torch it changes nothing (it could not work)."""
    assert _thp_after("import glip") == "1"
    # and torch follows it: with it, large blocks are page-aligned (then madvised for huge pages)
    aligned = "import glip, torch; assert torch.empty(8 << 20).data_ptr() % 4096 == 0"
    assert _thp_after(aligned) == "1"
    assert _thp_after("import glip", GLIP_HUGE_PAGES="0") == "None"
    assert _thp_after("import glip", THP_MEM_ALLOC_ENABLE="0") == "0"
    assert _thp_after("import torch, glip") == "None"
