"""An event loop on a daemon thread, so the blocking API works even where a loop is already
running (Jupyter, inside async code)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="clip-grpc-client", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and wait for its result (Ctrl-C cancels it)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Drive an async generator from blocking code, one item per step."""
        try:
            while True:
                try:
                    yield self.run(_next(agen))
                except StopAsyncIteration:
                    return
        finally:
            self.run(_close_when_idle(agen))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


async def _next(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


async def _close_when_idle(agen) -> None:
    """aclose() fails on a generator still running, as one is right after Ctrl-C cancelled
    the step it was in: wait for the cancellation to land first."""
    while agen.ag_running:
        await asyncio.sleep(0.01)
    await agen.aclose()
