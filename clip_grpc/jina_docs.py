"""What clip-as-service's HTTP (bridge) and gRPC (server) translators share: reading a jina
Document's content, the endpoints, and the routes' timing. No jina or docarray import: the
server and the bridge read the wire formats themselves."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from .data_uri import DataUriError, decode_data_uri, is_data_uri, not_a_data_uri

ENCODE, RANK, DEFAULT = "/encode", "/rank", "/"
# clip-server binds encode to jina's default endpoint too: profile() posts one empty doc there.
ENDPOINTS = {"/encode": ENCODE, "/rank": RANK, "/": DEFAULT, "/default": DEFAULT, "": DEFAULT}
# The executor name clip-server's Flow has; clip-client's profile() prints the second route.
EXECUTOR = "clip_t"


class DocError(ValueError):
    """A Document the server cannot embed; the message names it."""


def endpoint_of(name: str) -> str:
    endpoint = ENDPOINTS.get(name)
    if endpoint is None:
        raise DocError(f"unknown endpoint {name!r}: this server answers /encode, /rank and /")
    return endpoint


@dataclass(frozen=True)
class Content:
    text: str | None = None
    image: bytes | None = None

    @property
    def empty(self) -> bool:
        return self.text is None and self.image is None


def doc_content(doc_id: str, text: str | None, blob: bytes | None, uri: str | None,
                has_tensor: bool = False) -> Content:
    """A doc's text, or its image: `blob` when present (the client puts its own local path in
    `uri` beside it, which is ignored), else `uri` read only as a data: URI. The server never
    fetches URLs and never opens paths."""
    if text:
        return Content(text=text)
    if blob:
        return Content(image=blob)
    if uri:
        if not is_data_uri(uri):
            raise DocError(f"doc {doc_id!r}: uri {not_a_data_uri(uri)}")
        try:
            return Content(image=decode_data_uri(uri))
        except DataUriError as error:
            raise DocError(f"doc {doc_id!r}: {error}") from None
    if has_tensor:
        raise DocError(f"doc {doc_id!r}: tensor docs are not supported; send the image file's "
                       "bytes as blob (or a data: URI as uri)")
    return Content()


def no_content(doc_id: str) -> DocError:
    return DocError(f"doc {doc_id!r} has no text, blob or data: uri to embed")


@dataclass
class Span:
    """A route's start and end, rounded outward to whole milliseconds and at least 1 ms long:
    clip-client's profile() divides by the first route's length in milliseconds."""

    start: float
    end: float | None = None

    @classmethod
    def begin(cls) -> Span:
        return cls(time.time())

    def finish(self) -> Span:
        self.end = time.time()
        return self

    def milliseconds(self) -> tuple[int, int]:
        start_ms = math.floor(self.start * 1000)
        end_ms = max(math.ceil((self.end or self.start) * 1000), start_ms + 1)
        return start_ms, end_ms


def rfc3339(milliseconds: int) -> str:
    moment = datetime.fromtimestamp(milliseconds / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{milliseconds % 1000:03d}Z"
