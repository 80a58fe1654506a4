"""Proto <-> engine conversion for ClipService, and nothing else."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import numpy as np

from . import __version__
from .engine import Engine, Input, Ranked
from .errors import ClipError, InvalidInput, ShuttingDown, grpc_code, public_message
from .rich_errors import error_trailers
from .v1 import clip_pb2, clip_pb2_grpc

log = logging.getLogger(__name__)
FLOAT_LIST = clip_pb2.EMBEDDING_FORMAT_FLOAT_LIST


async def abort_with(context, error: ClipError) -> None:
    code, message = grpc_code(error), public_message(error)
    await context.abort(code, message, trailing_metadata=error_trailers(code, message, error.field))


def to_input(item: clip_pb2.Item) -> Input:
    kind = item.WhichOneof("content")
    if kind == "text":
        return Input(item.id, text=item.text)
    if kind == "image":
        return Input(item.id, image=item.image)
    return Input(item.id)  # the engine reports the missing content for this item alone


def item_error(error: ClipError) -> clip_pb2.ItemError:
    return clip_pb2.ItemError(
        code=grpc_code(error).value[0], message=public_message(error), field=error.field
    )


def add_result(results, item_id: str, outcome, fmt: int) -> None:
    """Append one item's EmbedResult to the repeated field results: its vector or its error.
    Filled in place, which costs half of building an EmbedResult and copying it in."""
    result = results.add(id=item_id)
    if isinstance(outcome, ClipError):
        result.error.CopyFrom(item_error(outcome))
        return
    vector = np.asarray(outcome, dtype="<f4")
    embedding = result.embedding
    embedding.dim = vector.size
    if fmt == FLOAT_LIST:
        embedding.values.extend(vector.tolist())
    else:
        embedding.packed = vector.tobytes()


def ranked_candidate(ranked: Ranked) -> clip_pb2.RankedCandidate:
    return clip_pb2.RankedCandidate(
        id=ranked.id,
        index=ranked.index,
        cosine=ranked.cosine,
        probability=ranked.probability,
        score=ranked.score,
    )


class _ItemWindow:
    """Bounds the items one stream has in flight; a message larger than the window runs alone."""

    def __init__(self, size: int):
        self.size = size
        self.used = 0
        self._changed = asyncio.Condition()

    async def acquire(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used == 0 or self.used + count <= self.size)
            self.used += count

    async def release(self, count: int) -> None:
        async with self._changed:
            self.used -= count
            self._changed.notify_all()


async def ordered_responses(requests: AsyncIterator, handle, window_size: int, weight):
    """Answer each request message with handle(message), concurrently, yielding in order."""
    window = _ItemWindow(window_size)
    tasks: asyncio.Queue[asyncio.Task | None] = asyncio.Queue()

    async def run(message):
        try:
            return await handle(message)
        finally:
            await window.release(weight(message))

    async def read():
        try:
            async for message in requests:
                await window.acquire(weight(message))
                tasks.put_nowait(asyncio.create_task(run(message)))
        finally:
            tasks.put_nowait(None)

    reader = asyncio.create_task(read())
    started: list[asyncio.Task] = []
    try:
        while (task := await tasks.get()) is not None:
            started.append(task)
            yield await task
            started.remove(task)
        await reader  # surfaces a broken request stream
    finally:
        reader.cancel()
        for task in started:
            task.cancel()
        while not tasks.empty():
            task = tasks.get_nowait()
            if task is not None:
                task.cancel()


class ClipServicer(clip_pb2_grpc.ClipServiceServicer):
    def __init__(self, engine: Engine | None):
        self.engine = engine  # None until the model has loaded and warmed up

    async def _require_ready(self, context) -> None:
        if self.engine is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the model is not loaded yet")
        if not self.engine.accepting:  # draining after SIGTERM: the client retries elsewhere
            await abort_with(context, ShuttingDown("the server is shutting down"))

    async def _embed_into(self, results, items, options) -> None:
        """Append an EmbedResult per item to results. Raises ClipError (and appends nothing)
        only when no item could be admitted (overload, shutdown)."""
        inputs = [to_input(item) for item in items]
        outcomes = await self.engine.embed(inputs, raw=options.raw, truncate=options.truncate)
        for item, outcome in zip(inputs, outcomes, strict=True):
            add_result(results, item.id, outcome, options.format)

    async def Embed(self, request, context):
        await self._require_ready(context)
        if not request.items:
            await abort_with(context, InvalidInput("items: the request has no items", "items"))
        response = clip_pb2.EmbedResponse()
        try:
            await self._embed_into(response.results, request.items, request.options)
        except ClipError as error:
            await abort_with(context, error)
        return response

    async def EmbedStream(self, request_iterator, context):
        await self._require_ready(context)
        async def handle(request):
            response = clip_pb2.EmbedStreamResponse()
            try:
                await self._embed_into(response.results, request.items, request.options)
            except ShuttingDown:
                raise  # ends the stream: the caller resumes at its first unanswered message
            except ClipError as error:  # this message alone is refused; the stream goes on
                for item in request.items:
                    add_result(response.results, item.id, error, request.options.format)
            return response

        try:
            async for response in ordered_responses(
                request_iterator, handle, self.engine.config.stream_window, lambda r: len(r.items)
            ):
                yield response
        except ShuttingDown as error:
            await abort_with(context, error)

    async def _rank(self, request) -> list[clip_pb2.RankedCandidate]:
        if not request.HasField("query"):
            raise InvalidInput("rank needs a query", "query")
        ranked = await self.engine.rank(
            to_input(request.query), [to_input(c) for c in request.candidates], request.truncate
        )
        return [ranked_candidate(r) for r in ranked]

    async def Rank(self, request, context):
        await self._require_ready(context)
        try:
            candidates = await self._rank(request)
        except ClipError as error:
            await abort_with(context, error)
        return clip_pb2.RankResponse(query_id=request.query.id, candidates=candidates)

    async def RankStream(self, request_iterator, context):
        await self._require_ready(context)
        async def handle(request):
            try:
                candidates = await self._rank(request)
            except ShuttingDown:
                raise
            except ClipError as error:
                return clip_pb2.RankStreamResponse(
                    query_id=request.query.id, error=item_error(error)
                )
            return clip_pb2.RankStreamResponse(query_id=request.query.id, candidates=candidates)

        try:
            async for response in ordered_responses(
                request_iterator, handle, self.engine.config.stream_window,
                lambda r: len(r.candidates) + 1,
            ):
                yield response
        except ShuttingDown as error:
            await abort_with(context, error)

    async def Info(self, request, context):
        await self._require_ready(context)
        loaded, config = self.engine.loaded, self.engine.config
        height, _ = loaded.image_transform.output_hw
        return clip_pb2.InfoResponse(
            model_name=loaded.name,
            model_source=loaded.source,
            model_family=loaded.family,
            embedding_dim=loaded.embedding_dim,
            image_size=height,
            text_context_length=loaded.context_length,
            dtype=loaded.dtype_name,
            device=str(loaded.device),
            max_batch_size=max(self.engine.batch_limits.values()),  # the larger modality's
            max_wait_ms=int(config.max_wait_ms),
            max_queue_size=config.max_queue_size,
            max_image_bytes=config.max_image_bytes,
            max_image_pixels=config.max_image_pixels,
            server_version=__version__,
            logit_scale=loaded.logit_scale,
            logit_bias=loaded.logit_bias,
        )
