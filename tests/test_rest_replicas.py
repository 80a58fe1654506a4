"""The REST bridge over two server replicas (real processes): calls are spread, and the bridge
keeps answering 200 while one replica is SIGKILLed."""

from __future__ import annotations

import asyncio
import json

import pytest

from rest_bridge.backend import channel_options
from rest_bridge.config import BridgeConfig
from tests.replicas import replicas
from tests.rest_helpers import running_bridge


async def test_the_bridge_keeps_answering_while_a_replica_is_killed(tiny_clip_dir, tmp_path):
    async with replicas(tiny_clip_dir, tmp_path, 2) as (victim, survivor):
        async with running_bridge(f"{victim.target},{survivor.target}") as bridge:
            codes: list[int] = []
            killed = asyncio.Event()

            async def keep_asking(worker: int) -> None:
                for n in range(60):
                    if n == 20 and worker == 0:
                        victim.kill()
                        killed.set()
                    if n == 21:
                        await killed.wait()  # every worker asks again after the kill
                    payload = {"items": [{"id": f"{worker}-{n}", "text": f"text {worker} {n}"}]}
                    response = await bridge.post_json("/v1/embed", payload)
                    codes.append(response.code)
                    if response.code != 200:
                        raise AssertionError(f"{response.code}: {response.body[:300]!r}")
                    assert json.loads(response.body)["results"][0]["id"] == f"{worker}-{n}"

            await asyncio.gather(*(keep_asking(worker) for worker in range(4)))
        served = len(victim.rpcs("Embed")), len(survivor.rpcs("Embed"))
    assert codes == [200] * 240
    assert victim.process.returncode == -9
    assert served[0] >= 10, served  # round_robin: the victim had its share before the kill
    assert served[1] >= 150, served  # and the survivor took every call after it


def test_the_bridge_balances_round_robin_and_checks_its_target():
    options = dict(channel_options(BridgeConfig(grpc_target="10.0.0.1:50051,10.0.0.2:50051")))
    assert json.loads(options["grpc.service_config"])["loadBalancingConfig"] == [
        {"round_robin": {}}
    ]
    assert options["grpc.default_authority"] == "10.0.0.1:50051"
    with pytest.raises(ValueError, match="host:port"):
        BridgeConfig(grpc_target="10.0.0.1:50051,nope")
