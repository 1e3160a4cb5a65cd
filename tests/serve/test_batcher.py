"""glip.serve.batcher with a fake predictor: grouping by prompt, batch limits, errors, a full queue."""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from glip.images import ImageError
from glip.serve.batcher import Batcher, DetectRequest, QueueFullError
from glip.text.tokenizer import PromptError


class FakePredictor:
    """predict() returns (prompt, image width) per image; width 0 images are 'bad'; records calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...] | None, int]] = []

    def predict(
        self, images, classes=None, caption=None, phrases=None, threshold=0.5, batch_size=1, masks=False
    ):
        self.calls.append((tuple(classes) if classes else None, len(images)))
        if classes == ["bad prompt"]:
            raise PromptError("bad prompt")
        if any(image.width == 1 for image in images):
            raise ImageError("a 1-pixel-wide image")
        return [(classes, caption, image.width) for image in images]


def request(width: int = 8, classes: tuple[str, ...] | None = ("a",), **kwargs) -> DetectRequest:
    return DetectRequest(Image.new("RGB", (width, 8)), classes=classes, **kwargs)


async def run_all(batcher: Batcher, requests: list[DetectRequest]) -> list:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
    finally:
        await batcher.stop()


def test_requests_are_grouped_by_prompt_within_max_batch():
    predictor = FakePredictor()
    batcher = Batcher(predictor, max_batch=4, max_wait_ms=100)
    requests = [request(8 + i, ("a",) if i % 2 == 0 else ("b",)) for i in range(6)]
    results = asyncio.run(run_all(batcher, requests))
    assert results == [(["a"] if i % 2 == 0 else ["b"], None, 8 + i) for i in range(6)]
    assert predictor.calls == [(("a",), 2), (("b",), 2), (("a",), 1), (("b",), 1)]
    assert dict(batcher.stats.batch_sizes) == {4: 1, 2: 1} and batcher.stats.completed == 6


def test_a_different_threshold_or_caption_is_a_different_prompt():
    keys = {
        request().prompt_key,
        request(threshold=0.3).prompt_key,
        request(classes=None, caption="a cat").prompt_key,
        request(classes=None, caption="a cat", phrases=("cat",)).prompt_key,
    }
    assert len(keys) == 4 and request(width=20).prompt_key == request().prompt_key


def test_errors_reach_their_requests_only_and_the_worker_keeps_going():
    predictor = FakePredictor()
    batcher = Batcher(predictor, max_batch=8, max_wait_ms=50)
    requests = [request(classes=("bad prompt",)), request(), request(width=1), request(width=9)]
    results = asyncio.run(run_all(batcher, requests))
    assert isinstance(results[0], PromptError)
    assert results[1] == (["a"], None, 8) and results[3] == (["a"], None, 9)
    assert isinstance(results[2], ImageError)  # the group failed on it, then ran one by one
    assert batcher.stats.failed == 2 and batcher.stats.completed == 2


def test_a_full_queue_raises_queue_full():
    async def scenario() -> list:
        batcher = Batcher(FakePredictor(), max_batch=1, max_wait_ms=0, max_queue=2)
        batcher.start()
        try:
            # submitted in one go: the worker has not run yet, so the queue holds two and refuses the third
            return await asyncio.gather(
                *(batcher.submit(request()) for _ in range(3)), return_exceptions=True
            )
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert isinstance(results[2], QueueFullError) and "busy" in str(results[2])
    assert results[:2] == [(["a"], None, 8)] * 2


def test_bad_settings_and_no_start():
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(FakePredictor(), max_batch=0)
    with pytest.raises(RuntimeError, match="start"):
        asyncio.run(Batcher(FakePredictor()).submit(request()))


def test_another_task_shares_the_worker_in_its_own_groups():
    """The hook for GLIPv2 /ask and /caption: a request type with prompt_key + run() goes through the same
    batcher, grouped apart from detection requests even when its prompt_key is equal."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class AskRequest:
        image: Image.Image
        question: str

        @property
        def prompt_key(self):
            return (("a",), None, None, 0.5, False)  # the same key as request(): the type keeps them apart

        @staticmethod
        def run(predictor, requests):
            predictor.calls.append(("ask", len(requests)))
            return [f"{r.question} {r.image.width}" for r in requests]

    predictor = FakePredictor()
    batcher = Batcher(predictor, max_batch=8, max_wait_ms=100)
    asks = [AskRequest(Image.new("RGB", (w, 8)), "what?") for w in (5, 6)]
    results = asyncio.run(run_all(batcher, [request(8), asks[0], request(9), asks[1]]))
    assert results == [(["a"], None, 8), "what? 5", (["a"], None, 9), "what? 6"]
    assert predictor.calls == [(("a",), 2), ("ask", 2)]
