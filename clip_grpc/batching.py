"""Dynamic batching: the only place where items of many requests are grouped into batches.

A Batcher takes chunks (the prepared items of one request or stream message, submitted with one
future) from one queue and cuts them into batches of at most max_batch_size items, waiting at
most max_wait for a batch to fill; a chunk larger than the room left in a batch continues in the
next one; it waits only while more items are on their way (`coming`), since a batch that nothing
can join leaves at once. Each batch runs in the model's executor, and each chunk gets its rows
of the output (sliced straight from the batch's output array) once its last item has run. While
a batch runs, the next chunks queue, so under load batches fill without any waiting. A chunk
whose caller went away (its future was cancelled) is dropped before any more of it reaches the
model; a batch that fails fails the chunks it held, and no others.

Timing is taken per batch, in the model thread: when the batch started and finished. A chunk
learns, from `submit_many_timed`, its queue wait until the batch that held its last items
started and that batch's forward seconds; `on_batch`, when set, hears (size, forward seconds) of
each batch that ran.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _BatchTiming:
    started: float  # time.perf_counter() in the model thread
    finished: float


@dataclass(slots=True)
class _Chunk:
    payloads: Sequence[Any]
    future: asyncio.Future
    enqueued: float  # time.perf_counter()
    taken: int = 0  # how many payloads have gone into batches
    parts: list = field(default_factory=list)  # the outputs of its finished batches, in order
    batch: _BatchTiming | None = None  # the batch that held its last payloads

    @property
    def left(self) -> int:
        return len(self.payloads) - self.taken


def _joined(parts: list) -> Sequence[Any]:
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return list(itertools.chain.from_iterable(parts))


class Batcher:
    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        executor: Executor,
        max_batch_size: int,
        max_wait_s: float,
    ):
        self.name = name
        self._run_batch = run_batch
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._chunks: collections.deque[_Chunk] = collections.deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)  # recent sizes
        self.on_batch: Callable[[int, float], None] | None = None
        # When set: how many items are on their way (being prepared) that could still join a
        # batch. While none are, waiting max_wait for the batch to fill would only idle the model.
        self.coming: Callable[[], int] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._chunks:
            chunk = self._chunks.popleft()
            if not chunk.future.done():
                chunk.future.cancel()

    def refuse_queued(self, error: BaseException) -> None:
        """Fail every chunk still waiting for a batch with error (shutdown after the grace)."""
        while self._chunks:
            chunk = self._chunks.popleft()
            if not chunk.future.done():
                chunk.future.set_exception(error)

    async def submit(self, payload: Any) -> Any:
        """Queue one item and wait for its output. Cancelling the caller drops the item."""
        return (await self.submit_timed(payload))[0]

    async def submit_timed(self, payload: Any) -> tuple[Any, float, float]:
        """(output, seconds queued until its batch started, seconds of its batch's forward)."""
        outputs, queue_s, forward_s = await self.submit_many_timed([payload])
        return outputs[0], queue_s, forward_s

    async def submit_many_timed(
        self, payloads: Sequence[Any]
    ) -> tuple[Sequence[Any], float, float]:
        """Queue a chunk of items and wait for all their outputs, in order (rows of the model's
        output array): (outputs, seconds queued until the batch holding its last items started,
        seconds of that batch's forward). Cancelling the caller drops what has not run yet."""
        if not payloads:
            return [], 0.0, 0.0
        chunk = _Chunk(payloads, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._chunks.append(chunk)
        self._arrived.set()
        outputs = await chunk.future
        batch = chunk.batch
        return outputs, batch.started - chunk.enqueued, batch.finished - batch.started

    def queued(self) -> int:
        """Items waiting for a batch."""
        return sum(chunk.left for chunk in self._chunks if not chunk.future.done())

    async def _live_chunk(self, timeout: float | None) -> bool:
        """Wait until a chunk whose caller is still there heads the queue (False: timed out)."""
        while True:
            while self._chunks and self._chunks[0].future.done():
                self._chunks.popleft()
            if self._chunks:
                return True
            if timeout is not None and timeout <= 0:
                return False
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                return False

    async def _collect(self) -> list[tuple[_Chunk, int, int]]:
        """The next batch: (chunk, first, end) slices of queued chunks, in arrival order."""
        loop = asyncio.get_running_loop()
        await self._live_chunk(None)
        deadline = loop.time() + self.max_wait_s
        batch, size = [], 0
        while True:
            while size < self.max_batch_size and self._chunks:
                chunk = self._chunks[0]
                if chunk.future.done():
                    self._chunks.popleft()
                    continue
                take = min(chunk.left, self.max_batch_size - size)
                batch.append((chunk, chunk.taken, chunk.taken + take))
                chunk.taken += take
                size += take
                if not chunk.left:
                    self._chunks.popleft()
            if size >= self.max_batch_size:
                return batch
            more_may_come = self.coming is None or self.coming() > 0
            if not await self._live_chunk(deadline - loop.time() if more_may_come else 0.0):
                return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [piece for piece in await self._collect() if not piece[0].future.done()]
            if not batch:
                continue
            payloads = [p for chunk, first, end in batch for p in chunk.payloads[first:end]]
            self.batch_sizes.append(len(payloads))
            try:
                outputs, timing = await loop.run_in_executor(
                    self._executor, self._run_timed, payloads
                )
            except Exception as error:  # one bad batch must not stop the batcher
                log.exception("batch failed", extra={"batcher": self.name, "size": len(payloads)})
                for chunk, _, _ in batch:
                    if not chunk.future.done():
                        chunk.future.set_exception(error)
                continue
            offset = 0
            for chunk, first, end in batch:
                part, offset = outputs[offset : offset + end - first], offset + end - first
                if chunk.future.done():
                    continue
                chunk.parts.append(part)
                if end == len(chunk.payloads):
                    chunk.batch = timing
                    chunk.future.set_result(_joined(chunk.parts))
            if self.on_batch is not None:
                self.on_batch(len(payloads), timing.finished - timing.started)

    def _run_timed(self, payloads: list[Any]) -> tuple[Sequence[Any], _BatchTiming]:
        """In the model thread: the batch's outputs, and when it started and finished."""
        started = time.perf_counter()
        outputs = self._run_batch(payloads)
        return outputs, _BatchTiming(started, time.perf_counter())
