"""Replicas as real processes: one SIGKILLed in the middle of a call loses nothing, whether the
call is spread over parallel streams or is one stream on the killed replica."""

from __future__ import annotations

import asyncio
import logging
import re

import numpy as np

from clip_grpc.client import Client
from tests.replicas import replicas

# How the client logs a stream lost with its replica: UNAVAILABLE, or the INTERNAL "Internal
# error from Core" grpc sometimes reports for a connection cut mid-stream (client/stream.py).
LOST = re.compile(r"EmbedStream failed \((UNAVAILABLE|INTERNAL: Internal error from Core)")


async def test_sigkill_of_a_replica_mid_call_loses_and_repeats_nothing(
    tiny_clip_dir, tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger="clip_grpc.client.stream")
    texts = [f"sentence number {i}" for i in range(3000)]
    killed = asyncio.Event()

    async def items():
        for i, text in enumerate(texts):
            if i == 1500:  # the second half goes out only once a replica is gone
                await killed.wait()
            yield text

    async with replicas(tiny_clip_dir, tmp_path, 3) as (victim, *survivors):
        targets = [victim.target] + [replica.target for replica in survivors]
        async with Client(targets, batch_size=8, max_in_flight=64, backoff=0.2) as client:
            await client.ainfo()
            outcomes = []
            async for outcome in client.astream(items(), parallel_streams=3):
                outcomes.append(outcome)
                if outcome.index == 600:
                    victim.kill()
                    killed.set()
            reference = await client.aencode(texts)
        served = [sum(e["messages"] for e in r.rpcs("EmbedStream")) for r in survivors]

    assert [o.index for o in outcomes] == list(range(3000))
    assert [o.id for o in outcomes] == [str(i) for i in range(3000)]
    assert all(o.error is None for o in outcomes)
    np.testing.assert_allclose(np.stack([o.embedding for o in outcomes]), reference, atol=1e-5)
    resent = [r.getMessage() for r in caplog.records if "resending" in r.getMessage()]
    assert resent and LOST.search(resent[0])  # a stream was on the killed replica
    assert all(count > 0 for count in served), served


async def test_one_stream_on_a_sigkilled_replica_moves_to_the_other(tiny_clip_dir, tmp_path,
                                                                    caplog):  # fmt: skip
    # The default encode: one EmbedStream, so one replica; when it dies, the stream is resent
    # from its first unanswered item, and round_robin sends it to the replica still up.
    caplog.set_level(logging.WARNING, logger="clip_grpc.client.stream")
    texts = [f"sentence number {i}" for i in range(2000)]
    killed = asyncio.Event()
    embedded = "clip_grpc_items_embedded_total"

    async def items():
        for i, text in enumerate(texts):
            if i == 1000:
                await killed.wait()
            yield text

    async with replicas(tiny_clip_dir, tmp_path, 2, metrics=True) as pair:
        async with Client([r.target for r in pair], batch_size=8, max_in_flight=64,
                          backoff=0.2) as client:  # fmt: skip
            await client.ainfo()
            outcomes, counts = [], []
            async for outcome in client.astream(items()):
                outcomes.append(outcome)
                if outcome.index == 400:
                    counts = [await asyncio.to_thread(r.metric, embedded) for r in pair]
                    victim = pair[counts.index(max(counts))]
                    survivor = pair[1 - pair.index(victim)]
                    victim.kill()
                    killed.set()
            after = await asyncio.to_thread(survivor.metric, embedded)
            reference = await client.aencode(texts)

    assert min(counts) == 0 and max(counts) >= 400, counts  # one stream, on one replica
    assert [o.index for o in outcomes] == list(range(2000))
    assert [o.id for o in outcomes] == [str(i) for i in range(2000)]
    assert all(o.error is None for o in outcomes)
    np.testing.assert_allclose(np.stack([o.embedding for o in outcomes]), reference, atol=1e-5)
    resent = [r.getMessage() for r in caplog.records if "resending" in r.getMessage()]
    assert resent and LOST.search(resent[0]), resent
    assert after >= 1000, after  # the second half went out after the kill: all of it there
