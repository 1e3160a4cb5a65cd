"""glip.memory: during large no-grad CPU forwards freed memory goes back to the OS: at stage ends (the default,
"stages") or as soon as a big block is freed ("map")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import glip
import glip.memory as memory
from glip.preprocess import ImageBatch

needs_glibc = pytest.mark.skipif(memory._glibc() is None, reason="needs glibc's mallopt / malloc_trim")


CHURN = """
import json, os, sys
import torch
import glip.memory as memory

def rss_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def churn(count=8, size_mb=max(4, memory.MAP_THRESHOLD // 2**20 + 4)):
    # blocks of size_mb (above the "map" threshold), each followed by a 128 KB tensor that pins the heap
    # top; free the big ones
    before = rss_mb()
    big, pins = [], []
    for _ in range(count):
        big.append(torch.ones(size_mb * 2**18))
        pins.append(torch.ones(32 * 1024))
    del big
    return rss_mb() - before

memory.RELEASE = sys.argv[2]
# a freed 31 MB block raises glibc's dynamic mmap threshold to 31 MB: the churn's blocks then come from the
# heap and stay resident after they are freed
big = torch.ones(31 * 2**18)
del big
phase = sys.argv[1]
with torch.no_grad():
    if phase == "outside":
        kept = churn()
    elif phase == "inside":
        with memory.large_forward(torch.zeros(1, 1, 512, 512)) as active:
            assert active
            kept = churn()
    elif phase == "stage_end":
        with memory.large_forward(torch.zeros(1, 1, 512, 512)) as active:
            assert active
            before = rss_mb()
            kept = churn()
            memory.stage_end()
            kept = rss_mb() - before
    else:  # after a large forward
        with memory.large_forward(torch.zeros(1, 1, 512, 512)):
            pass
        kept = churn()
print(json.dumps(kept))
"""


def kept_mb(phase: str, release: str) -> float:
    # a fresh process per phase: the heap's free holes left by earlier code would take the blocks instead
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-c", CHURN, phase, release]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_glibc
def test_freed_blocks_go_back_at_once_by_default():
    # 8 blocks of MAP_THRESHOLD + 4 MB (160 MB at the 16 MB default) allocated and freed
    assert kept_mb("outside", "auto") > 100  # glibc's usual behaviour: most of it stays resident
    assert kept_mb("inside", "auto") < 20  # mapped blocks go back when freed (the pins stay: 5 MB)
    assert kept_mb("after", "auto") > 100  # the usual behaviour is back after the forward


@needs_glibc
def test_freed_blocks_go_back_at_stage_ends_with_stages():
    assert kept_mb("inside", "stages") > 100  # inside a stage the heap keeps them (reused, no page faults)
    assert kept_mb("stage_end", "stages") < 20  # a stage end returns them
    assert kept_mb("after", "stages") > 100


def test_only_large_no_grad_cpu_inputs(monkeypatch):
    monkeypatch.setattr(memory, "_glibc", lambda: object())
    monkeypatch.setattr(memory, "RELEASE", "auto")
    big, small = torch.zeros(1, 3, 512, 512), torch.zeros(1, 3, 511, 512)
    assert not memory.applies(big)  # autograd on: a training step is left alone
    with torch.no_grad():
        assert not memory.applies(small)
        assert memory.applies(big)
        assert memory.applies(torch.zeros(2, 3, 256, 512))  # the batch counts
        # a feature map counts as the image it came from: P3 (stride 8) of a 512x512 image, 256 channels
        assert memory.applies(torch.zeros(1, 256, 64, 64), stride=8)
        assert not memory.applies(torch.zeros(1, 256, 64, 63), stride=8)
        assert not memory.applies(torch.zeros(3 * 512 * 512))  # not an image batch (text-only forwards)
        monkeypatch.setattr(memory, "RELEASE", "map")
        assert memory.applies(big)
        monkeypatch.setattr(memory, "RELEASE", "never")
        assert not memory.applies(big)


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("trim",))
        return 1

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", value))
        return 1


def test_forward_sets_the_thresholds_once_and_restores_them(monkeypatch):
    torch.manual_seed(0)
    model = glip.build_model(glip.get_preset("tiny_random")).eval()
    libc = FakeLibc()
    monkeypatch.setattr(memory, "_glibc", lambda: libc)
    monkeypatch.setattr(memory, "RELEASE", "stages")
    monkeypatch.setattr(memory, "MIN_PIXELS", 0)
    images = ImageBatch(torch.randn(1, 3, 64, 96), [(64, 96)])
    ids = torch.tensor([[101, 2417, 1012, 102]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        treated = model(images, ids, mask)
    # nested (forward > encode_images, forward_head): set on the outermost entry, restored on its exit;
    # a trim after the backbone and after each head block's fusion and DyConv
    stages = 1 + sum((b.fusion is not None) + 1 for b in model.head.blocks)
    assert libc.calls == [
        ("trim",),
        ("mallopt", memory.HEAP_THRESHOLD),
        ("mallopt", memory.TRIM_THRESHOLD),
        *[("trim",)] * stages,
        ("mallopt", memory.RESTORE_THRESHOLD),
        ("mallopt", memory.RESTORE_TRIM_THRESHOLD),
        ("trim",),
    ]
    assert memory._depth == 0
    libc.calls.clear()
    monkeypatch.setattr(memory, "RELEASE", "auto")  # the default: map
    with torch.no_grad():
        mapped = model(images, ids, mask)
    assert libc.calls == [
        ("trim",),
        ("mallopt", memory.MAP_THRESHOLD),
        ("mallopt", memory.RESTORE_THRESHOLD),
        ("trim",),
    ]
    monkeypatch.setattr(memory, "RELEASE", "never")
    with torch.no_grad():
        plain = model(images, ids, mask)
    for a, b, c in zip(treated.head.token_logits, plain.head.token_logits, mapped.head.token_logits):
        assert torch.equal(a, b) and torch.equal(a, c)
    libc.calls.clear()
    monkeypatch.setattr(memory, "RELEASE", "stages")
    model(images, ids, mask)  # with autograd: untouched
    memory.stage_end()  # outside a large forward: nothing
    assert libc.calls == []


def test_sizes_from_the_environment(monkeypatch):
    monkeypatch.setenv("GLIP_TEST_BYTES", "1048576")
    assert memory._env_bytes("GLIP_TEST_BYTES", 5) == 1 << 20
    monkeypatch.setenv("GLIP_TEST_BYTES", str(64 << 20))
    assert (
        memory._env_bytes("GLIP_TEST_BYTES", 5, memory.MAX_MMAP_THRESHOLD) == 32 << 20
    )  # glibc refuses more
    assert memory._env_bytes("GLIP_TEST_BYTES", 5) == 64 << 20  # no maximum: kept
    monkeypatch.setenv("GLIP_TEST_BYTES", " ")
    assert memory._env_bytes("GLIP_TEST_BYTES", 5) == 5
    monkeypatch.setenv("GLIP_TEST_BYTES", "16MB")
    with pytest.raises(ValueError, match="GLIP_TEST_BYTES='16MB': expected a size in bytes"):
        memory._env_bytes("GLIP_TEST_BYTES", 5)
