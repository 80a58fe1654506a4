"""Stopping the bridge without dropping requests: after SIGTERM it takes no new connections,
answers new requests on connections already open with 503 (Retry-After, Connection: close) and
/readyz with 503, and lets the requests in flight finish, for up to --grace-seconds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rest_bridge.status_map import ApiError

POLL_S = 0.05


class Drain:
    """Whether the bridge is stopping; every handler finds it in the application settings."""

    def __init__(self) -> None:
        self.started = False

    def start(self) -> None:
        self.started = True

    @staticmethod
    def refusal() -> ApiError:
        return ApiError(
            503, "UNAVAILABLE", "the REST bridge is shutting down: retry (another replica)",
            headers={"Connection": "close"},
        )


async def wait_idle(in_flight: Callable[[], float], seconds: float) -> bool:
    """Wait until in_flight() is 0, for at most `seconds`; whether it got there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while in_flight() > 0:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True
