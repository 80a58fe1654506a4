"""One call over several EmbedStreams at once, so one dataset uses several replicas.

The streams share one BatchFeed: each takes the next batch when it has room, so a fast replica
takes more. Each stream resumes on its own (a new call, which round_robin sends to a replica
that is up) when its replica fails; answers are put back in input order here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from clip_grpc.client.batches import Batch
from clip_grpc.client.stream import BatchFeed, EmbedStreamer, StreamProtocolError

_DONE = object()


async def in_input_order(
    streamers: Sequence[EmbedStreamer], feed: BatchFeed
) -> AsyncIterator[tuple[Batch, Any]]:
    """`(batch, results)` pairs from all `streamers`, in input order; the first error any of
    them raises stops the others and is raised here."""
    answers: asyncio.Queue = asyncio.Queue()

    async def pump(streamer: EmbedStreamer) -> None:
        try:
            async for pair in streamer:
                await answers.put(pair)
            await answers.put(_DONE)
        except Exception as error:
            await answers.put(error)

    tasks = [asyncio.create_task(pump(streamer)) for streamer in streamers]
    early: dict[int, tuple[Batch, Any]] = {}  # answered before the batches ahead of them
    next_start, running = 0, len(tasks)
    try:
        while running:
            got = await answers.get()
            if got is _DONE:
                running -= 1
                continue
            if isinstance(got, Exception):
                raise got
            early[got[0].start] = got
            while next_start in early:
                pair = early.pop(next_start)
                next_start += pair[0].size
                feed.release(next_start)
                yield pair
        if early:
            raise StreamProtocolError(f"items from {next_start} were never answered")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
