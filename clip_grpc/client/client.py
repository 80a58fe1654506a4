"""`Client`: embed, rank and inspect through a clip-grpc server, blocking or async.

Every blocking method has an async twin with an `a` prefix (`encode`/`aencode`, ...). The async
ones run on the caller's event loop; the blocking ones run on a private loop thread, so they also
work where a loop is already running (Jupyter). Items follow the rule in `clip_grpc.client.items`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from clip_grpc.client.background_loop import BackgroundLoop
from clip_grpc.client.batches import Batcher
from clip_grpc.client.connection import Connection
from clip_grpc.client.errors import ItemFailedError, ItemFailure
from clip_grpc.client.items import Image, Text, to_item
from clip_grpc.client.results import EncodeResult, Match, Outcome, outcomes, stack
from clip_grpc.client.stream import EmbedStreamer, RetryPolicy
from clip_grpc.v1 import clip_pb2

Items = Iterable[Any] | AsyncIterator[Any]


class Client:
    """A connection to one clip-grpc server.

    `target`: "host:port", "grpc://host:port" or "grpcs://host:port" (TLS).
    `batch_size`: items per EmbedStream message; `max_in_flight`: items sent and not yet
    answered (back-pressure: memory stays constant however many items you stream).
    `timeout`: seconds for a unary call, and for each EmbedStream answer.
    `retries`, `backoff`, `max_backoff`: UNAVAILABLE (and overload refusals in streams) are
    retried with exponential backoff; a stream resumes at its first unanswered item.
    `tls`, `root_certificates` (PEM bytes or path), `token` (sent as "authorization: Bearer"),
    `metadata`: extra headers on every call.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        batch_size: int = 32,
        max_in_flight: int = 256,
        timeout: float | None = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        show_progress: bool = False,
        tls: bool | None = None,
        root_certificates: bytes | str | os.PathLike | None = None,
        token: str | None = None,
        metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        max_request_bytes: int = 4 * 1024 * 1024 - 64 * 1024,
        channel_options: Sequence[tuple[str, object]] = (),
    ):
        self.target = target
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.show_progress = show_progress
        self.max_request_bytes = max_request_bytes
        self._retry = RetryPolicy(retries=retries, backoff_s=backoff, max_backoff_s=max_backoff)
        self._connection = Connection.build(
            target, tls=tls, root_certificates=root_certificates, token=token,
            metadata=metadata, retries=retries, backoff_s=backoff, max_backoff_s=max_backoff,
            channel_options=channel_options,
        )  # fmt: skip
        self._channels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._background: BackgroundLoop | None = None
        self._dim: int | None = None

    # ---- blocking API -------------------------------------------------------------------

    def encode(
        self,
        items: Items,
        *,
        errors: Literal["raise", "return"] = "raise",
        raw: bool = False,
        truncate: bool = False,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray | EncodeResult:
        """Embed `items` (texts, image bytes, image paths, PIL images, `Text`, `Image`) into a
        float32 array of shape (n, dim), in input order; `items` may be any lazy iterable.

        A str naming an existing file is read as an image; any other str is a text (wrap it in
        `Text(...)`/`Image(...)` to say which). With `errors="raise"` the first item that fails
        raises ItemFailedError naming its index, id, code and message; with `errors="return"`
        you get `EncodeResult(embeddings, errors)` where failed rows are NaN. `raw=True` skips
        L2 normalisation; `truncate=True` cuts texts longer than the model's context."""
        return self._run(
            self.aencode(
                items, errors=errors, raw=raw, truncate=truncate, batch_size=batch_size,
                show_progress=show_progress,
            )
        )  # fmt: skip

    def encode_texts(self, texts: Iterable[str], **kwargs) -> np.ndarray | EncodeResult:
        """`encode` where every item is a text, even one that names a file."""
        return self.encode(_Mapped(Text, texts), **kwargs)

    def encode_images(self, images: Iterable[Any], **kwargs) -> np.ndarray | EncodeResult:
        """`encode` where every item is an image (bytes, path or PIL image)."""
        return self.encode(_Mapped(Image, images), **kwargs)

    def stream(self, items: Items, **kwargs) -> Iterator[Outcome]:
        """Yield one `Outcome` (index, id, embedding or error) per item, in input order, as
        answers arrive: for datasets larger than memory. Takes `encode`'s keyword arguments
        except `errors` (each Outcome carries its own)."""
        for chunk in self._background_loop().iterate(self._outcome_chunks(items, **kwargs)):
            yield from chunk

    def rank(self, query: Any, candidates: Iterable[Any], *, truncate: bool = False) -> list[Match]:
        """Score `candidates` against `query` (each a text or an image, as in `encode`); best
        first, each with its cosine, probability (softmax over candidates for CLIP) and score."""
        return self._run(self.arank(query, candidates, truncate=truncate))

    def info(self) -> clip_pb2.InfoResponse:
        """The server's model (name, family, embedding_dim, ...) and limits."""
        return self._run(self.ainfo())

    def profile(self, repeats: int = 5, *, file=None) -> dict[str, float]:
        """Time round trips (median of `repeats`, in ms): Info (no model work, so the transport
        and gRPC overhead), one text and one image embedded, with the server's own time for each,
        in total and per stage: decode/tokenise, queue wait, forward pass, serialise (its
        `server-timing` trailer). Prints a table to `file` (stderr by default)."""
        return self._run(self.aprofile(repeats, file=file))

    def close(self) -> None:
        """Close the blocking API's channel and thread (async channels: `aclose`)."""
        if self._background is not None:
            self._background.run(self._close_channel())
            self._background.close()
            self._background = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- async API ----------------------------------------------------------------------

    async def aencode(
        self,
        items: Items,
        *,
        errors: Literal["raise", "return"] = "raise",
        raw: bool = False,
        truncate: bool = False,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray | EncodeResult:
        """Async `encode`; `items` may also be an async iterable."""
        if errors not in ("raise", "return"):
            raise ValueError(f'errors must be "raise" or "return", not {errors!r}')
        vectors: list[np.ndarray | None] = []
        failures: list[ItemFailure] = []
        chunks = self._outcome_chunks(
            items, raw=raw, truncate=truncate, batch_size=batch_size, show_progress=show_progress
        )
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                for outcome in chunk:
                    if outcome.error is not None:
                        if errors == "raise":
                            raise ItemFailedError(outcome.error)
                        failures.append(outcome.error)
                    vectors.append(outcome.embedding)
        embeddings = stack(vectors, await self._embedding_dim(vectors))
        return embeddings if errors == "raise" else EncodeResult(embeddings, failures)

    async def aencode_texts(self, texts: Iterable[str], **kwargs) -> np.ndarray | EncodeResult:
        return await self.aencode(_Mapped(Text, texts), **kwargs)

    async def aencode_images(self, images: Iterable[Any], **kwargs) -> np.ndarray | EncodeResult:
        return await self.aencode(_Mapped(Image, images), **kwargs)

    async def astream(self, items: Items, **kwargs) -> AsyncIterator[Outcome]:
        """Async `stream`."""
        chunks = self._outcome_chunks(items, **kwargs)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                for outcome in chunk:
                    yield outcome

    async def arank(
        self, query: Any, candidates: Iterable[Any], *, truncate: bool = False
    ) -> list[Match]:
        """Async `rank`."""
        candidates = list(candidates)
        request = await asyncio.to_thread(_rank_request, query, candidates, truncate)
        response = await self._stub().Rank(request, timeout=self.timeout, metadata=self._metadata)
        return [
            Match(c.index, c.id, candidates[c.index], c.cosine, c.probability, c.score)
            for c in response.candidates
        ]

    async def ainfo(self) -> clip_pb2.InfoResponse:
        """Async `info`."""
        request = clip_pb2.InfoRequest()
        return await self._stub().Info(request, timeout=self.timeout, metadata=self._metadata)

    async def aprofile(self, repeats: int = 5, *, file=None) -> dict[str, float]:
        """Async `profile`."""
        from clip_grpc.client.profile import measure

        return await measure(self, repeats, file=sys.stderr if file is None else file)

    async def aclose(self) -> None:
        """Close the channel of the running event loop."""
        await self._close_channel()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    # ---- internals ----------------------------------------------------------------------

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        return self._connection.metadata or None

    def _stub(self):
        loop = asyncio.get_running_loop()
        if loop not in self._channels:
            self._channels[loop] = self._connection.open()
        return self._channels[loop][1]

    async def _close_channel(self) -> None:
        opened = self._channels.pop(asyncio.get_running_loop(), None)
        if opened is not None:
            await opened[0].close()

    def _background_loop(self) -> BackgroundLoop:
        if self._background is None:
            self._background = BackgroundLoop()
        return self._background

    def _run(self, coroutine):
        return self._background_loop().run(coroutine)

    async def _embedding_dim(self, vectors: list[np.ndarray | None]) -> int:
        known = next((v.shape[0] for v in vectors if v is not None), None)
        if known is None and self._dim is None:
            self._dim = (await self.ainfo()).embedding_dim
        elif known is not None:
            self._dim = known
        return self._dim

    async def _outcome_chunks(
        self,
        items: Items,
        *,
        raw: bool = False,
        truncate: bool = False,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> AsyncIterator[list[Outcome]]:
        """Outcomes in input order, one list per EmbedStream message."""
        if isinstance(items, str | bytes | os.PathLike | Text | Image):
            raise TypeError("pass a list of items: encode([item]), not encode(item)")
        batch_size = batch_size or self.batch_size
        options = clip_pb2.EmbedOptions(raw=raw, truncate=truncate)
        stub = self._stub()
        streamer = EmbedStreamer(
            lambda: stub.EmbedStream(metadata=self._metadata),
            items,
            Batcher(options, batch_size, self.max_request_bytes),
            max_in_flight=self.max_in_flight,
            batch_size=batch_size,
            timeout_s=self.timeout,
            retry=self._retry,
        )
        show = self.show_progress if show_progress is None else show_progress
        with tqdm(
            total=_length(items), disable=not show, unit="item", desc="embedding"
        ) as progress:
            answers = streamer.__aiter__()
            async with contextlib.aclosing(answers):
                async for batch, results in answers:
                    progress.update(batch.size)
                    yield outcomes(batch, results)


class _Mapped:
    """`map(wrap, items)` that keeps `len()` for the progress bar."""

    def __init__(self, wrap, items: Iterable[Any]):
        self._wrap, self._items = wrap, items

    def __len__(self) -> int:
        return len(self._items)  # TypeError when the items have no length

    def __iter__(self):
        return map(self._wrap, self._items)


def _length(items: Any) -> int | None:
    try:
        return len(items)
    except TypeError:
        return None


def _rank_request(query: Any, candidates: list[Any], truncate: bool) -> clip_pb2.RankRequest:
    query_item = to_item(query, 0)
    candidate_items = [to_item(candidate, i) for i, candidate in enumerate(candidates)]
    for item in (query_item, *candidate_items):
        if isinstance(item, ItemFailure):
            raise ItemFailedError(item)
    if getattr(query, "id", None) is None and not isinstance(query, clip_pb2.Item):
        query_item.id = "query"
    return clip_pb2.RankRequest(query=query_item, candidates=candidate_items, truncate=truncate)
