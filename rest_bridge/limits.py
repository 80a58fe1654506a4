"""The bridge's bounds on what one client can make it hold: requests at once, time to send a
body, image sizes. (Header size and connection timeouts live in `listener`.)"""

from __future__ import annotations

import time
from collections.abc import Iterable

from rest_bridge.config import BridgeConfig
from rest_bridge.status_map import ApiError

# How long the server's image limit, learnt from its Info, is trusted before asking again.
SERVER_LIMIT_TTL_S = 60.0


class ConcurrencyLimit:
    """Requests being handled now, up to `limit`; the rest are refused (429) at once."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_use = 0

    def try_enter(self) -> bool:
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def leave(self) -> None:
        self.in_use -= 1

    def refusal(self) -> ApiError:
        return ApiError(
            429, "RESOURCE_EXHAUSTED",
            f"the bridge is already handling its limit of {self.limit} requests; retry shortly",
        )


class ImageLimit:
    """The largest image the bridge forwards: `--max-image-bytes`, or else the server's own
    limit (InfoResponse.max_image_bytes), remembered for a minute."""

    def __init__(self, fixed: int):
        self.fixed = fixed
        self._learnt: int | None = None
        self._learnt_at = 0.0

    def known(self) -> int | None:
        if self.fixed:
            return self.fixed
        if self._learnt is not None and time.monotonic() - self._learnt_at < SERVER_LIMIT_TTL_S:
            return self._learnt
        return None

    def remember(self, server_limit: int) -> int | None:
        self._learnt, self._learnt_at = server_limit or None, time.monotonic()
        return self._learnt


def check_image_sizes(images: Iterable[tuple[str, int]], limit: int | None) -> None:
    """413 naming the first image (field, size) over the limit."""
    if limit is None:
        return
    for field, size in images:
        if size > limit:
            raise ApiError(
                413, "PAYLOAD_TOO_LARGE",
                f"{field}: the image is {size} bytes, over the limit of {limit} bytes", field,
            )


def body_timeout(seconds: float) -> ApiError:
    return ApiError(
        408, "REQUEST_TIMEOUT", f"the request body did not arrive within {seconds:g} seconds"
    )


class RequestLimits:
    """What make_app keeps, for every handler."""

    def __init__(self, config: BridgeConfig):
        self.concurrency = ConcurrencyLimit(config.max_concurrent_requests)
        self.images = ImageLimit(config.max_image_bytes)
