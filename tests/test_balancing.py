"""The Client over several replicas: targets, round_robin, parallel_streams (real servers on
loopback, in this process)."""

from __future__ import annotations

import contextlib
import socket

import numpy as np
import pytest

from clip_grpc.client import Client
from clip_grpc.client.targets import parse_targets
from clip_grpc.server import running_server
from tests.conftest import server_config


class Counted:
    """Counts the items (and calls) that reach one server's engine."""

    def __init__(self, running):
        self.running, self.calls, self.items = running, 0, 0
        embed = running.engine.embed

        async def counting(inputs, **kwargs):
            self.calls += 1
            self.items += len(inputs)
            return await embed(inputs, **kwargs)

        running.engine.embed = counting

    @property
    def port(self) -> int:
        return self.running.port


@pytest.fixture(scope="module")
async def three(tiny_clip_dir, tiny_clip):
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                running_server(server_config(tiny_clip_dir), loaded=tiny_clip)
            )
            for _ in range(3)
        ]
        yield [Counted(server) for server in servers]


def reset(servers) -> None:
    for server in servers:
        server.calls = server.items = 0


async def test_round_robin_spreads_calls_over_three_replicas(three):
    reset(three)
    async with Client(",".join(f"127.0.0.1:{s.port}" for s in three)) as client:
        await client.ainfo()  # connects every replica (round_robin connects them all)
        for i in range(30):
            await client.aencode([f"call {i}"])
    shares = [s.calls for s in three]
    assert sum(shares) == 30
    assert min(shares) >= 6, shares  # an even split is 10 each


async def test_a_list_of_host_names_balances_too(three):
    reset(three)
    async with Client([f"localhost:{s.port}" for s in three]) as client:
        for i in range(30):
            await client.aencode([f"call {i}"])
    assert sum(s.calls for s in three) == 30
    assert min(s.calls for s in three) >= 6, [s.calls for s in three]


async def test_pick_first_sticks_to_one_replica(three):
    reset(three)
    targets = ",".join(f"127.0.0.1:{s.port}" for s in three)
    async with Client(targets, load_balancing="pick_first") as client:
        for i in range(10):
            await client.aencode([f"call {i}"])
    assert sorted(s.calls for s in three) == [0, 0, 10]


async def test_dns_target(three):
    async with Client(f"dns:///localhost:{three[0].port}") as client:
        assert (await client.aencode(["a red circle"])).shape[0] == 1


async def test_parallel_streams_use_all_replicas_for_one_call(three):
    reset(three)
    texts = [f"sentence number {i}" for i in range(900)]
    targets = [f"127.0.0.1:{s.port}" for s in three]
    async with Client(targets, batch_size=8, max_in_flight=32) as client:
        await client.ainfo()
        reference = await client.aencode(texts)  # one stream: one replica
        reset(three)
        spread = await client.aencode(texts, parallel_streams=3)
        outcomes = [o async for o in client.astream(texts[:50], parallel_streams=3)]
    assert all(s.items >= 100 for s in three), [s.items for s in three]
    np.testing.assert_allclose(spread, reference, atol=1e-5)
    assert [o.index for o in outcomes] == list(range(50))
    assert [o.id for o in outcomes] == [str(i) for i in range(50)]


async def test_parallel_streams_with_failing_items_keeps_order(three):
    texts = ["x " * 500 if i % 97 == 5 else f"text {i}" for i in range(400)]
    async with Client([f"127.0.0.1:{s.port}" for s in three], batch_size=4) as client:
        result = await client.aencode(texts, errors="return", parallel_streams=3)
    assert [f.index for f in result.errors] == [i for i in range(400) if i % 97 == 5]
    assert result.ok.sum() == 400 - len(result.errors)


def test_targets_are_parsed():
    assert parse_targets("h:1").single == "h:1"
    assert parse_targets("grpcs://h:443").tls
    assert parse_targets("dns:///clip.default.svc:50051").single == "dns:///clip.default.svc:50051"
    assert parse_targets(["dns:///clip:1"]).single == "dns:///clip:1"
    listed = parse_targets("127.0.0.1:1, 127.0.0.1:2")
    assert listed.channel_target() == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert listed.authority == "127.0.0.1:1"
    assert parse_targets(["[::1]:1", "::1:2"]).channel_target() == "ipv6:[::1]:1,[::1]:2"
    assert parse_targets(["localhost:1", "127.0.0.1:2"]).channel_target().startswith("ipv4:")
    for bad, words in (("a:1,grpcs://b:2", "mixed"), ("a:1,b", "host:port"), ("", "no server"),
                       ("a:1,dns:///b:2", "cannot be part")):  # fmt: skip
        with pytest.raises(ValueError, match=words):
            parse_targets(bad)


def test_a_list_of_one_family_only_is_refused_when_it_mixes(monkeypatch):
    real = socket.getaddrinfo

    def six_only(host, *args, **kwargs):
        if host == "six.test":
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 1, 0, 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", six_only)
    with pytest.raises(ValueError, match="one family"):
        parse_targets("six.test:1,127.0.0.1:2").channel_target()
