"""Dynamic batching: the only place where items of many requests are grouped into batches.

A Batcher collects items from one queue into batches of at most max_batch_size, waiting at most
max_wait for a batch to fill, and runs each batch in the model's executor. While a batch runs,
the next one gathers, so under load batches fill without any waiting. Items whose caller went
away (their future was cancelled) are dropped before they reach the model.

Timing is taken per batch, in the model thread: when the batch started and finished. Each item
learns its queue wait and its batch's forward seconds from `submit_timed`; `on_batch`, when set,
hears (size, forward seconds) of each batch that ran.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _BatchTiming:
    started: float  # time.perf_counter() in the model thread
    finished: float


@dataclass(slots=True)
class _Pending:
    payload: Any
    future: asyncio.Future
    enqueued: float  # time.perf_counter()
    batch: _BatchTiming | None = None


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
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)  # recent sizes
        self.on_batch: Callable[[int, float], None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.cancel()

    def refuse_queued(self, error: BaseException) -> None:
        """Fail every item still waiting for a batch with error (shutdown after the grace)."""
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(error)

    async def submit(self, payload: Any) -> Any:
        """Queue one item and wait for its output. Cancelling the caller drops the item."""
        return (await self.submit_timed(payload))[0]

    async def submit_timed(self, payload: Any) -> tuple[Any, float, float]:
        """(output, seconds queued until its batch started, seconds of its batch's forward)."""
        pending = _Pending(payload, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._queue.put_nowait(pending)
        output = await pending.future
        batch = pending.batch
        return output, batch.started - pending.enqueued, batch.finished - batch.started

    def queued(self) -> int:
        return self._queue.qsize()

    async def _next_live(self, timeout: float | None) -> _Pending | None:
        while True:
            if self._queue.empty() and timeout is not None:
                if timeout <= 0:
                    return None
                try:
                    pending = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    return None
            else:
                pending = await self._queue.get()
            if not pending.future.done():
                return pending

    async def _collect(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch = [await self._next_live(None)]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            pending = await self._next_live(max(deadline - loop.time(), 0.0))
            if pending is None:
                break
            batch.append(pending)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [p for p in await self._collect() if not p.future.done()]
            if not batch:
                continue
            self.batch_sizes.append(len(batch))
            try:
                outputs, timing = await loop.run_in_executor(
                    self._executor, self._run_timed, [p.payload for p in batch]
                )
            except Exception as error:  # one bad batch must not stop the batcher
                log.exception("batch failed", extra={"batcher": self.name, "size": len(batch)})
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            for pending, output in zip(batch, outputs, strict=True):
                if not pending.future.done():
                    pending.batch = timing
                    pending.future.set_result(output)
            if self.on_batch is not None:
                self.on_batch(len(batch), timing.finished - timing.started)

    def _run_timed(self, payloads: list[Any]) -> tuple[Sequence[Any], _BatchTiming]:
        """In the model thread: the batch's outputs, and when it started and finished."""
        started = time.perf_counter()
        outputs = self._run_batch(payloads)
        return outputs, _BatchTiming(started, time.perf_counter())
