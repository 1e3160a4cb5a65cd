"""Dynamic batching: a bounded asyncio queue and one worker task in front of the predictor.

Handlers ``await batcher.submit(request)``. The worker takes the first waiting request, then collects
more until it has ``max_batch`` or ``max_wait_ms`` have passed, groups the requests that share a prompt
(classes / caption + phrases, threshold, masks) into one ``predictor.predict([...])`` call each (which
itself groups images by padded size, so every image gets its single-image result) and runs it in a
thread, so the event loop keeps accepting requests. All predictor calls happen in that one thread, one
at a time: the predictor (its tokenizer and text cache) is never used concurrently.

A request whose prompt is bad fails with its :class:`~glip.text.tokenizer.PromptError`; when a group
fails on one image (:class:`~glip.images.ImageError`), its requests are retried one by one so that the
others still get their result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from glip.images import ImageError

logger = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """More requests are waiting than the queue holds; the client should retry later (HTTP 503)."""


@dataclass(frozen=True)
class DetectRequest:
    """One image and its prompt: ``classes`` (detection) or ``caption`` (+ ``phrases``, grounding)."""

    image: Image.Image
    classes: tuple[str, ...] | None = None
    caption: str | None = None
    phrases: tuple[str, ...] | None = None
    threshold: float = 0.5
    masks: bool = False

    @property
    def prompt_key(self) -> tuple[Any, ...]:
        """Requests with equal keys are answered by one ``predict`` call."""
        return (self.classes, self.caption, self.phrases, self.threshold, self.masks)

    @staticmethod
    def run(predictor: Any, requests: Sequence[DetectRequest]) -> list[Any]:
        """Answer requests that share a ``prompt_key``: :func:`predict_group`."""
        return predict_group(predictor, requests)


@dataclass(frozen=True)
class AskRequest:
    """GLIPv2 grounded VQA (``POST /ask``): one image and a question."""

    image: Image.Image
    question: str
    threshold: float = 0.3

    @property
    def prompt_key(self) -> tuple[Any, ...]:
        return (self.question, self.threshold)

    @staticmethod
    def run(predictor: Any, requests: Sequence[AskRequest]) -> list[Any]:
        """One ``predictor.ask`` over the images of requests that share the question."""
        first = requests[0]
        return list(predictor.ask([r.image for r in requests], first.question, threshold=first.threshold))


@dataclass(frozen=True)
class CaptionRequest:
    """GLIPv2 grounded captioning (``POST /caption``): one image, the beam width and the longest caption."""

    image: Image.Image
    beams: int = 1
    max_length: int = 32

    @property
    def prompt_key(self) -> tuple[Any, ...]:
        return (self.beams, self.max_length)

    @staticmethod
    def run(predictor: Any, requests: Sequence[CaptionRequest]) -> list[Any]:
        """One ``predictor.caption`` over the images of requests with the same settings."""
        first = requests[0]
        return list(
            predictor.caption([r.image for r in requests], beams=first.beams, max_length=first.max_length)
        )


@dataclass
class BatcherStats:
    """Counters for ``GET /health``: ``batch_sizes`` maps requests collected per worker round to how often
    that happened; ``call_sizes`` the same per ``predict`` call (one per distinct prompt of a round)."""

    requests: int = 0
    completed: int = 0
    failed: int = 0
    rejected: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)
    call_sizes: Counter[int] = field(default_factory=Counter)
    busy_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "completed": self.completed,
            "failed": self.failed,
            "rejected_queue_full": self.rejected,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "predict_call_sizes": {str(k): v for k, v in sorted(self.call_sizes.items())},
            "max_batch_size": max(self.batch_sizes, default=0),
            "busy_seconds": round(self.busy_seconds, 3),
        }


@dataclass
class _Pending:
    request: Any  # a DetectRequest, or another task's request (see run_requests)
    future: asyncio.Future[Any]


def run_requests(predictor: Any, requests: Sequence[Any]) -> list[Any]:
    """The default ``run_group``: the requests' own ``run`` (:meth:`DetectRequest.run` for detection).

    Another task (the GLIPv2 ``/ask`` and ``/caption`` endpoints, once the predictor has those heads) adds a
    frozen request dataclass with a ``prompt_key`` and a ``run(predictor, requests) -> results`` staticmethod,
    and its endpoint submits it to the same batcher: requests are grouped by (type, ``prompt_key``), and every
    predictor call still happens in the worker, one at a time."""
    return type(requests[0]).run(predictor, requests)


def predict_group(predictor: Any, requests: Sequence[DetectRequest]) -> list[Any]:
    """One ``predictor.predict`` call for requests that share a prompt; returns one Prediction each."""
    first = requests[0]
    prompt: dict[str, Any] = (
        {"classes": list(first.classes)}
        if first.classes is not None
        else {"caption": first.caption, "phrases": list(first.phrases) if first.phrases else None}
    )
    results = predictor.predict(
        [r.image for r in requests],
        threshold=first.threshold,
        batch_size=len(requests),
        masks=first.masks,
        **prompt,
    )
    return list(results)


class Batcher:
    """Collects concurrent requests into batches for ``run_group`` (default :func:`run_requests`).

    ``max_batch``: requests per worker round; ``max_wait_ms``: how long the worker waits for more after
    the first; ``max_queue``: waiting requests beyond which :meth:`submit` raises :class:`QueueFullError`.
    """

    def __init__(
        self,
        predictor: Any,
        max_batch: int = 8,
        max_wait_ms: float = 10.0,
        max_queue: int = 64,
        run_group: Callable[[Any, Sequence[Any]], list[Any]] = run_requests,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError(
                f"max_batch ({max_batch}) and max_queue ({max_queue}) must be >= 1 and max_wait_ms "
                f"({max_wait_ms}) >= 0"
            )
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.run_group = run_group
        self.stats = BatcherStats()
        self.running = 0  # requests being predicted now
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        """Start the worker on the running event loop (the app's start-up)."""
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="glip-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._queue is not None and not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(QueueFullError("the server is shutting down"))

    async def submit(self, request: Any) -> Any:
        """Queue ``request`` (a :class:`DetectRequest` or another task's, see :func:`run_requests`) and wait for
        its result (or the exception its prediction raised)."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called (the app was not started)")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(request, future))
        except asyncio.QueueFull:
            self.stats.rejected += 1
            raise QueueFullError(
                f"the server is busy: {self.max_queue} requests are already waiting; retry later"
            ) from None
        self.stats.requests += 1
        return await future

    async def _collect(self) -> list[_Pending]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [p for p in batch if not p.future.done()]  # a client that went away cancelled its future

    async def _work(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                continue
            self.stats.batch_sizes[len(batch)] += 1
            groups: dict[tuple[Any, ...], list[_Pending]] = {}
            for pending in batch:
                key = (type(pending.request), pending.request.prompt_key)
                groups.setdefault(key, []).append(pending)
            self.running = len(batch)
            started = time.perf_counter()
            try:
                for group in groups.values():
                    await self._answer(group)
            except Exception as exc:  # noqa: BLE001 - a bug here must fail these requests, not the worker
                logger.exception("the batch worker failed on a batch of %d", len(batch))
                for pending in batch:
                    self._settle(pending, exc)
            finally:
                self.stats.busy_seconds += time.perf_counter() - started
                self.running = 0

    async def _answer(self, group: list[_Pending]) -> None:
        self.stats.call_sizes[len(group)] += 1
        try:
            results = await asyncio.to_thread(self.run_group, self.predictor, [p.request for p in group])
        except ImageError as exc:
            if len(group) == 1:
                self._settle(group[0], exc)
                return
            for pending in group:  # find the bad image: the others still get their result
                await self._answer([pending])
            return
        except Exception as exc:  # noqa: BLE001 - handed to the request's handler, never kills the worker
            for pending in group:
                self._settle(pending, exc)
            return
        for pending, result in zip(group, results):
            self._settle(pending, result)

    def _settle(self, pending: _Pending, outcome: Any) -> None:
        if pending.future.done():
            return
        if isinstance(outcome, BaseException):
            self.stats.failed += 1
            pending.future.set_exception(outcome)
        else:
            self.stats.completed += 1
            pending.future.set_result(outcome)
