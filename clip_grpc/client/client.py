"""`Client`: embed, rank and inspect through a clip-grpc server, blocking or async.

Every blocking method has an async twin with an `a` prefix (`encode`/`aencode`, ...). The async
ones run on the caller's event loop; the blocking ones run on a private loop thread, so they also
work where a loop is already running (Jupyter). Items follow the rule in `clip_grpc.client.items`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import sys
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import grpc
import numpy as np
from tqdm.auto import tqdm

from clip_grpc.client.background_loop import BackgroundLoop
from clip_grpc.client.batches import Batcher
from clip_grpc.client.connection import Connection
from clip_grpc.client.errors import ItemFailedError, ItemFailure
from clip_grpc.client.items import Image, Text, to_item
from clip_grpc.client.parallel import in_input_order
from clip_grpc.client.results import EncodeResult, Match, Outcome, outcomes, stack
from clip_grpc.client.stream import BatchFeed, EmbedStreamer, Outage, RetryPolicy
from clip_grpc.v1 import clip_pb2

Items = Iterable[Any] | AsyncIterator[Any]
log = logging.getLogger(__name__)


class Client:
    """A connection to one clip-grpc server or to several replicas of it.

    `target`: "host:port", "grpc://host:port" or "grpcs://host:port" (TLS); "dns:///name:port"
    (every address the name resolves to, re-resolved by gRPC: a Kubernetes headless Service);
    or several replicas, "host1:50051,host2:50051" or a list of such targets.
    `load_balancing`: "round_robin" (default: each call, and each stream of a call with
    `parallel_streams`, goes to the next ready replica) or "pick_first" (one connection).
    `connections`: gRPC channels, each its own HTTP/2 connection to each server. None
    (default): one; and for `parallel_streams` with a single host:port target, one per stream,
    so a server run with `--workers N` (whose kernel spreads connections, not calls, over its
    processes) gets the streams spread over its workers (a list or dns:/// keeps one channel,
    whose round_robin spreads the streams over the replicas). A number: that many, unary calls
    and streams taking them in turn.
    `batch_size`: items per EmbedStream message; `max_in_flight`: items sent and not yet
    answered per stream (back-pressure: memory stays constant however many items you stream).
    `timeout`: seconds for a unary call, and for each EmbedStream answer.
    `retry_budget`, `backoff`, `max_backoff`, `retries`: UNAVAILABLE (and overload refusals in
    streams) are retried with exponential backoff until the server has been unavailable for
    `retry_budget` seconds (default 120: a restart of a minute or two is ridden out), or, when
    `retries` is set, after that many retries in a row; a stream resumes at its first
    unanswered item.
    `tls`, `root_certificates` (PEM bytes or path), `token` (sent as "authorization: Bearer"),
    `metadata`: extra headers on every call.
    """

    def __init__(
        self,
        target: str | Sequence[str] = "127.0.0.1:50051",
        *,
        batch_size: int = 32,
        max_in_flight: int = 256,
        timeout: float | None = 60.0,
        retry_budget: float = 120.0,
        retries: int | None = None,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        load_balancing: str = "round_robin",
        show_progress: bool = False,
        tls: bool | None = None,
        root_certificates: bytes | str | os.PathLike | None = None,
        certificate_chain: bytes | str | os.PathLike | None = None,
        private_key: bytes | str | os.PathLike | None = None,
        token: str | None = None,
        metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        max_request_bytes: int = 4 * 1024 * 1024 - 64 * 1024,
        channel_options: Sequence[tuple[str, object]] = (),
        connections: int | None = None,
    ):
        if connections is not None and connections < 1:
            raise ValueError("connections must be at least 1 (or None)")
        self.target = target
        self.connections = connections
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.show_progress = show_progress
        self.max_request_bytes = max_request_bytes
        self._retry = RetryPolicy(
            retries=retries, backoff_s=backoff, max_backoff_s=max_backoff, budget_s=retry_budget
        )
        self._connection = Connection.build(
            target, tls=tls, root_certificates=root_certificates,
            certificate_chain=certificate_chain, private_key=private_key, token=token,
            metadata=metadata, retries=retries, backoff_s=backoff, max_backoff_s=max_backoff,
            channel_options=channel_options, load_balancing=load_balancing,
        )  # fmt: skip
        # Per event loop: its channels and stubs, opened as they are first needed.
        self._channels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._turn = itertools.count()
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
        parallel_streams: int = 1,
    ) -> np.ndarray | EncodeResult:
        """Embed `items` (texts, image bytes, image paths, PIL images, `Text`, `Image`) into a
        float32 array of shape (n, dim), in input order; `items` may be any lazy iterable.

        A str naming an existing file is read as an image; any other str is a text (wrap it in
        `Text(...)`/`Image(...)` to say which). With `errors="raise"` the first item that fails
        raises ItemFailedError naming its index, id, code and message; with `errors="return"`
        you get `EncodeResult(embeddings, errors)` where failed rows are NaN. `raw=True` skips
        L2 normalisation; `truncate=True` cuts texts longer than the model's context.
        `parallel_streams=N` spreads the items over N EmbedStreams at once (with round_robin
        over replicas, N replicas work on one call); the order stays the input order."""
        return self._run(
            self.aencode(
                items, errors=errors, raw=raw, truncate=truncate, batch_size=batch_size,
                show_progress=show_progress, parallel_streams=parallel_streams,
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
        parallel_streams: int = 1,
    ) -> np.ndarray | EncodeResult:
        """Async `encode`; `items` may also be an async iterable."""
        if errors not in ("raise", "return"):
            raise ValueError(f'errors must be "raise" or "return", not {errors!r}')
        vectors: list[np.ndarray | None] = []
        failures: list[ItemFailure] = []
        chunks = self._outcome_chunks(
            items, raw=raw, truncate=truncate, batch_size=batch_size, show_progress=show_progress,
            parallel_streams=parallel_streams,
        )  # fmt: skip
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
        response = await self._unary("Rank", request)
        return [
            Match(c.index, c.id, candidates[c.index], c.cosine, c.probability, c.score)
            for c in response.candidates
        ]

    async def ainfo(self) -> clip_pb2.InfoResponse:
        """Async `info`."""
        return await self._unary("Info", clip_pb2.InfoRequest())

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

    def _stub(self, stream: int | None = None):
        """The stub of a unary call (the next connection in turn) or of `stream` (its own)."""
        opened = self._channels.setdefault(asyncio.get_running_loop(), [])
        if self.connections:
            index = (next(self._turn) if stream is None else stream) % self.connections
        elif stream is not None and self._one_address:  # its own connection for each stream
            index = stream
        else:  # one channel: round_robin sends each call (each stream) to the next replica
            index = 0
        while len(opened) <= index:
            opened.append(self._connection.open())
        return opened[index][1]

    async def _close_channel(self) -> None:
        for channel, _ in self._channels.pop(asyncio.get_running_loop(), []):
            await channel.close()

    @functools.cached_property
    def _one_address(self) -> bool:
        """A host:port (one server, maybe several workers), not replicas: a list or dns:///.
        Channels of their own would all start on the same replica; one channel spreads."""
        single = self._connection.targets.single
        return single is not None and not single.startswith("dns:")

    def _open_stream(self, stub):
        return stub.EmbedStream(metadata=self._metadata)

    async def _unary(self, method: str, request):
        """A unary call, tried again while the server is unavailable, within the retry budget
        (gRPC's own retries, in the service config, handle the short blips first)."""
        outage = Outage(self._retry)
        while True:
            call = getattr(self._stub(), method)
            try:
                return await call(request, timeout=self.timeout, metadata=self._metadata)
            except grpc.aio.AioRpcError as error:
                delay = outage.failed(error)
                if delay is None:
                    raise
                log.warning(
                    "%s failed (%s: %s); trying again in %.2f s (%s)", method, error.code().name,
                    error.details(), delay, outage.describe(),
                )  # fmt: skip
                await asyncio.sleep(delay)

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
        parallel_streams: int = 1,
    ) -> AsyncIterator[list[Outcome]]:
        """Outcomes in input order, one list per EmbedStream message."""
        if isinstance(items, str | bytes | os.PathLike | Text | Image):
            raise TypeError("pass a list of items: encode([item]), not encode(item)")
        if parallel_streams < 1:
            raise ValueError("parallel_streams must be at least 1")
        batch_size = batch_size or self.batch_size
        options = clip_pb2.EmbedOptions(raw=raw, truncate=truncate)
        # Parallel streams may answer out of order: at most this many items wait to be put back.
        window = parallel_streams * max(self.max_in_flight, batch_size) * 2
        feed = BatchFeed(
            items, Batcher(options, batch_size, self.max_request_bytes),
            window=window if parallel_streams > 1 else None,
        )  # fmt: skip
        streamers = [
            EmbedStreamer(
                # Resuming after a failure opens the new call on the stream's own connection.
                functools.partial(self._open_stream, self._stub(index)),
                feed,
                max_in_flight=self.max_in_flight,
                batch_size=batch_size,
                timeout_s=self.timeout,
                retry=self._retry,
            )
            for index in range(parallel_streams)
        ]
        answers = (
            streamers[0].__aiter__() if parallel_streams == 1 else in_input_order(streamers, feed)
        )
        show = self.show_progress if show_progress is None else show_progress
        try:
            with tqdm(
                total=_length(items), disable=not show, unit="item", desc="embedding"
            ) as progress:
                async with contextlib.aclosing(answers):
                    async for batch, results in answers:
                        progress.update(batch.size)
                        yield outcomes(batch, results)
        finally:
            feed.close()


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
