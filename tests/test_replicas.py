"""Replicas as real processes: one SIGKILLed in the middle of a parallel call loses nothing."""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from clip_grpc.client import Client
from tests.replicas import replicas


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
    assert resent and "UNAVAILABLE" in resent[0]  # a stream was on the killed replica
    assert all(count > 0 for count in served), served
