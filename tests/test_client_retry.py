"""EmbedStream survives a server restart: resent from the first unanswered item, no duplicates,
nothing reordered."""

from __future__ import annotations

import asyncio
import logging
import socket

import numpy as np

from clip_grpc.client import Client
from clip_grpc.server import running_server
from tests.conftest import server_config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_stream_resumes_after_the_server_restarts(tiny_clip_dir, tiny_clip, caplog):
    config = server_config(tiny_clip_dir, port=free_port())
    first = running_server(config, loaded=tiny_clip)
    await first.__aenter__()
    second = running_server(config, loaded=tiny_clip)
    stopped = asyncio.Event()

    async def restart():
        await first.__aexit__(None, None, None)  # NOT_SERVING, drain (1 s), stop
        stopped.set()
        await asyncio.sleep(0.5)  # the port refuses connections meanwhile
        await second.__aenter__()

    texts = [f"sentence number {i}" for i in range(600)]

    async def items():
        for i, text in enumerate(texts):
            if i == 300:  # the rest goes out only once the first server is gone
                await stopped.wait()
            yield text

    caplog.set_level(logging.WARNING, logger="clip_grpc.client.stream")
    client = Client(f"127.0.0.1:{config.port}", batch_size=8, max_in_flight=64, backoff=0.2)
    restarting = None
    try:
        outcomes = []
        async for outcome in client.astream(items()):
            outcomes.append(outcome)
            if outcome.index == 200:
                restarting = asyncio.create_task(restart())
        await restarting
        reference = await client.aencode(texts)
    finally:
        await client.aclose()
        await second.__aexit__(None, None, None)

    assert [o.index for o in outcomes] == list(range(600))
    assert [o.id for o in outcomes] == [str(i) for i in range(600)]
    assert all(o.error is None for o in outcomes)
    np.testing.assert_allclose(np.stack([o.embedding for o in outcomes]), reference, atol=1e-5)
    retries = [r.getMessage() for r in caplog.records if "resending" in r.getMessage()]
    assert retries and "UNAVAILABLE" in retries[0]
