"""Several HTTP/2 connections to one server, from the Client and from the REST bridge: how
the calls of one client process reach several workers of a `--workers N` server (the kernel
spreads connections, not calls)."""

from __future__ import annotations

import numpy as np
import pytest

from clip_grpc.client import Client
from clip_grpc.server import running_server
from tests.conftest import server_config
from tests.rest_helpers import running_bridge

TEXTS = [f"a photo of {n} cats" for n in range(40)]
ESTABLISHED = "01"


def connections_to(port: int) -> int:
    """Established TCP connections whose remote end is `port` on this machine (the clients'
    ends of the connections to a server listening there)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == ESTABLISHED and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


@pytest.fixture
async def server(tiny_clip_dir, tiny_clip):
    async with running_server(server_config(tiny_clip_dir), tiny_clip) as running:
        yield running


@pytest.mark.parametrize(("connections", "parallel_streams", "expected"), [
    (None, 1, 1), (None, 3, 3), (2, 4, 2), (3, 1, 3)])
async def test_the_client_opens_the_connections_it_is_asked_for(
    server, connections, parallel_streams, expected
):
    async with Client(server.target, connections=connections, batch_size=4) as client:
        single = await client.aencode(TEXTS)
        spread = await client.aencode(TEXTS, parallel_streams=parallel_streams)
        for _ in range(3):  # unary calls take the connections in turn
            await client.ainfo()
        assert connections_to(server.port) == expected
    # Same vectors, in input order; to float32 rounding, since how calls meet in batches
    # depends on timing, and a batch's rows and width move the last bits (~1e-6).
    np.testing.assert_allclose(spread, single, atol=1e-5)


def test_connections_must_be_positive():
    with pytest.raises(ValueError, match="connections"):
        Client("127.0.0.1:1", connections=0)


@pytest.mark.parametrize("connections", [1, 3])
async def test_the_bridge_spreads_its_calls_over_its_connections(server, connections):
    async with running_bridge(server.target, grpc_connections=connections) as bridge:
        for n in range(2 * connections):
            answer = await bridge.post_json("/v1/embed", {"items": [{"text": TEXTS[n]}]})
            assert answer.code == 200
        assert connections_to(server.port) == connections
