"""EmbedStream with back-pressure and resumption.

Request messages go out while fewer than `max_in_flight` items wait for an answer, so memory
stays constant for any dataset size. Sent but unanswered messages are kept; when the stream
fails with a retryable status (UNAVAILABLE by default) a new stream is opened after an
exponential backoff and they are sent again first. The server answers each message with one
message, in order, so results are neither duplicated nor reordered.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from clip_grpc.client.batches import Batch, Batcher
from clip_grpc.client.errors import STATUS_BY_NUMBER
from clip_grpc.v1 import clip_pb2

log = logging.getLogger(__name__)

_END = object()


@dataclass(frozen=True)
class RetryPolicy:
    """Retry a failed call, waiting `backoff_s`, then twice as long each time up to
    `max_backoff_s` (with jitter), until the failures in a row have lasted `budget_s` seconds
    (the default rides out a server restart of a minute or two) or, when `retries` is set,
    `retries` retries in a row have failed. A response ends the run of failures."""

    retries: int | None = None
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    budget_s: float = 120.0
    codes: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})
    # Per-item codes meaning "not now" (overloaded, shutting down): the message is sent again.
    refusal_codes: frozenset[grpc.StatusCode] = frozenset(
        {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
    )

    def retryable(self, error: Exception) -> bool:
        if isinstance(error, Refused):
            return error.code() in self.refusal_codes
        if not isinstance(error, grpc.aio.AioRpcError):
            return False
        return error.code() in self.codes or _lost_status(error)

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


def _lost_status(error: grpc.aio.AioRpcError) -> bool:
    """grpcio's asyncio client reports a write that fails because the server has just ended the
    stream (a restart, a drain) as INTERNAL "Internal error from Core", hiding the status the
    server sent (grpc/grpc#36066). Nothing about the request caused it, so it is retried as the
    UNAVAILABLE it stands for; every other INTERNAL is the server's own answer and is not."""
    return error.code() == grpc.StatusCode.INTERNAL and (
        error.details() == "Internal error from Core"
        or 'Failed "execute_batch"' in (error.debug_error_string() or "")
    )


class Outage:
    """One call's run of failures in a row, judged against a RetryPolicy."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic):
        self.policy, self._clock = policy, clock
        self.failures = 0
        self._since: float | None = None

    @property
    def waited_s(self) -> float:
        """Seconds since the first failure of this run (0 when there is none)."""
        return 0.0 if self._since is None else self._clock() - self._since

    def recovered(self) -> None:
        self.failures, self._since = 0, None

    def would_retry(self, error: Exception) -> bool:
        """Whether one more failure with `error` would still be retried."""
        retries = self.policy.retries
        return (
            self.policy.retryable(error)
            and (retries is None or self.failures < retries)
            and self.waited_s < self.policy.budget_s
        )

    def failed(self, error: Exception) -> float | None:
        """Record a failure: the seconds to wait before retrying, or None to give up."""
        if self._since is None:
            self._since = self._clock()
        if not self.would_retry(error):
            self.failures += 1
            return None
        self.failures += 1
        return min(self.policy.delay(self.failures), self.policy.budget_s - self.waited_s)

    def describe(self) -> str:
        """What to log, e.g. "retry 3, unavailable for 12.5 s of a 120 s budget"."""
        limit = f" (at most {self.policy.retries})" if self.policy.retries is not None else ""
        return (
            f"retry {self.failures}{limit}, unavailable for {self.waited_s:.1f} s "
            f"of a {self.policy.budget_s:g} s budget"
        )


class Refused(Exception):
    """The server answered a message with a transient per-item error (overloaded, shutting
    down) instead of embeddings; the message is sent again while retries remain."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self._code, self._message = code, message

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message


class StreamProtocolError(RuntimeError):
    """The server broke the EmbedStream contract (a missing or mis-sized response)."""


class EmbedStreamer:
    """Iterate `(batch, results)` pairs in input order; `results` is None for a batch that
    had nothing to send (all of its items failed locally)."""

    def __init__(
        self,
        open_call: Callable[[], grpc.aio.StreamStreamCall],
        feed: BatchFeed,
        *,
        max_in_flight: int,
        batch_size: int,
        timeout_s: float | None,
        retry: RetryPolicy,
    ):
        self._open_call = open_call
        self._feed = feed
        self._max_in_flight = max(max_in_flight, 1)
        self._batch_size = batch_size
        self._timeout_s = timeout_s
        self._retry = retry
        self._outage = Outage(retry)
        self._pending: deque[Batch] = deque()  # sent (or sent-nothing) batches not yet yielded
        self._in_flight = 0
        self._source_done = False
        self._changed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[tuple[Batch, list[clip_pb2.EmbedResult] | None]]:
        while not (self._source_done and not self._pending):
            call = self._open_call()
            try:
                async for answered in self._exchange(call):
                    self._outage.recovered()
                    yield answered
            except (grpc.aio.AioRpcError, Refused) as error:
                delay = self._outage.failed(error)
                if delay is None:
                    raise
                log.warning(
                    "EmbedStream failed (%s: %s); resending %d unanswered items in %.2f s (%s)",
                    error.code().name, error.details(), self._in_flight, delay,
                    self._outage.describe(),
                )  # fmt: skip
                await asyncio.sleep(delay)
            finally:
                call.cancel()

    async def _exchange(self, call) -> AsyncIterator[tuple[Batch, Any]]:
        writer = asyncio.create_task(self._write(call))
        try:
            while True:
                while self._pending and self._pending[0].sends_nothing:
                    yield self._answer(None)
                if self._source_done and not self._pending:
                    await self._finish(call, writer)
                    return
                await self._wait(lambda: self._pending or self._source_done or writer.done())
                if writer.done():
                    _raise_input_error(writer)
                if self._pending and self._pending[0].sends_nothing:
                    continue
                if self._source_done and not self._pending:
                    continue
                # Nothing pending here means the writer failed on the stream: read its status.
                response = await self._read(call)
                if not self._pending:
                    raise StreamProtocolError("a response to no request")
                batch = self._pending[0]
                if len(response.results) != len(batch.request.items):
                    raise StreamProtocolError(
                        f"{len(response.results)} results for a message of "
                        f"{len(batch.request.items)} items (items {batch.start}..)"
                    )
                refusal = _refusal(response.results, self._retry.refusal_codes)
                if refusal and self._outage.would_retry(refusal):
                    raise refusal  # otherwise the items report the refusal as their errors
                yield self._answer(response.results)
        finally:
            writer.cancel()

    async def _finish(self, call, writer: asyncio.Task) -> None:
        """Everything is answered: let the half-close go out and read the server's OK."""
        await writer
        if await asyncio.wait_for(call.read(), self._timeout_s) is not grpc.aio.EOF:
            raise StreamProtocolError("a response after the last answer")

    async def _write(self, call) -> None:
        try:
            for batch in list(self._pending):  # unanswered after a failed stream: send again
                if not batch.sends_nothing:
                    await call.write(batch.request)
            while not self._source_done:
                await self._wait(self._has_room)
                batch = await self._feed.get()
                if batch is _END:
                    self._source_done = True
                    break
                if isinstance(batch, Exception):
                    raise batch
                self._pending.append(batch)
                self._in_flight += batch.size
                self._changed.set()
                if not batch.sends_nothing:
                    await call.write(batch.request)
            await call.done_writing()
        finally:
            self._changed.set()

    async def _read(self, call) -> clip_pb2.EmbedStreamResponse:
        timeout_s = self._timeout_s if self._pending else None
        try:
            response = await asyncio.wait_for(call.read(), timeout_s)
        except asyncio.TimeoutError:
            first = self._pending[0].start
            raise TimeoutError(
                f"no EmbedStream response within {timeout_s}s (items from {first})"
            ) from None
        if response is grpc.aio.EOF:
            raise StreamProtocolError(
                f"the server ended EmbedStream with {self._in_flight} items unanswered"
            )
        return response

    def _answer(self, results) -> tuple[Batch, Any]:
        batch = self._pending.popleft()
        self._in_flight -= batch.size
        self._changed.set()
        return batch, results

    def _has_room(self) -> bool:
        return self._in_flight == 0 or self._in_flight + self._batch_size <= self._max_in_flight

    async def _wait(self, condition: Callable[[], object]) -> None:
        while not condition():
            self._changed.clear()
            await self._changed.wait()


class BatchFeed:
    """Batches built from the inputs ahead of sending (image files are read in a worker thread),
    taken by one or several EmbedStreamers as each has room. With `window` (items), a batch is
    handed out only once fewer than `window` items before it wait to be `release`d, which bounds
    what parallel streams buffer to keep the input order. Close it when done."""

    def __init__(self, inputs: Iterable[Any] | AsyncIterator[Any], batcher: Batcher,
                 window: int | None = None):  # fmt: skip
        self._inputs, self._batcher, self._window = inputs, batcher, window
        self._ready: asyncio.Queue = asyncio.Queue(maxsize=1)
        self._returned: list[Batch] = []  # taken back from a getter cancelled while waiting
        self._end: object | None = None  # _END or the input's exception, once reached
        self._released = 0
        self._changed = asyncio.Event()
        self._producer: asyncio.Task | None = None

    async def get(self) -> Batch | object:
        """The next batch, then `_END` (or the exception the inputs raised) for every caller."""
        if self._producer is None:
            self._producer = asyncio.create_task(self._produce())
        if self._returned:
            batch = self._returned.pop()
        elif self._end is not None:
            return self._end
        else:
            batch = await self._ready.get()
            if batch is _END or isinstance(batch, Exception):
                self._end = batch
                self._ready.put_nowait(batch)  # for the other streams waiting on the queue
                return batch
        try:
            while self._window is not None and batch.start - self._released >= self._window:
                self._changed.clear()
                await self._changed.wait()
        except asyncio.CancelledError:
            self._returned.append(batch)
            self._returned.sort(key=lambda b: -b.start)  # the earliest is popped first
            raise
        return batch

    def release(self, upto: int) -> None:
        """Every item before index `upto` has been handed to the caller."""
        self._released = upto
        self._changed.set()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.cancel()

    async def _produce(self) -> None:
        try:
            if hasattr(self._inputs, "__aiter__"):
                async for obj in self._inputs:
                    for batch in self._batcher.add(obj):
                        await self._ready.put(batch)
                for batch in self._batcher.flush():
                    await self._ready.put(batch)
            else:
                inputs = iter(self._inputs)
                while batches := await asyncio.to_thread(self._batcher.fill, inputs):
                    for batch in batches:
                        await self._ready.put(batch)
            await self._ready.put(_END)
        except Exception as error:  # handed to a writer, which raises it in the caller
            await self._ready.put(error)


def _raise_input_error(writer: asyncio.Task) -> None:
    """Raise what stopped the writer, unless it was the stream failing: that status is left to
    the next read, where retries handle it."""
    error = None if writer.cancelled() else writer.exception()
    if error is not None and not isinstance(
        error, grpc.aio.AioRpcError | asyncio.InvalidStateError
    ):
        raise error


def _refusal(results, codes: frozenset[grpc.StatusCode]) -> Refused | None:
    for result in results:
        if result.HasField("error"):
            code = STATUS_BY_NUMBER.get(result.error.code)
            if code in codes:
                return Refused(code, result.error.message)
    return None
