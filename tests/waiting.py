"""Waiting for something to happen, not for a while: the one polling helper of the tests.

The CI machine is a busy 2-core box, so a test waits for the state it needs (a queue filled, a
call cancelled, a probe answering) with a timeout generous enough that load only makes it wait
longer; it never sleeps a fixed time and hopes.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

TIMEOUT_S = 60.0


async def until(condition: Callable[[], Any], timeout: float = TIMEOUT_S, every: float = 0.01):
    """Call condition() (sync or async) until it returns something true, and return that.
    Fails the test, showing the last value, when it has not within timeout seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert loop.time() < deadline, f"timed out after {timeout} s; last value: {value!r}"
        await asyncio.sleep(every)
