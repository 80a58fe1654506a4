"""Connection policy: keepalive pings clients may send, and connection ageing that lets a
long-lived client find a replica started after it connected."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from clip_grpc.server import running_server
from clip_grpc.server_options import server_options
from clip_grpc.v1 import clip_pb2 as pb
from clip_grpc.v1 import clip_pb2_grpc
from tests.conftest import server_config

# A client that pings every second, with or without calls, and never stops (gRPC's clients stop
# after 2 pings without data unless told otherwise): clip-as-service's 10 s pinger, 10x faster.
PINGING_CLIENT = (
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)


def test_options_follow_the_config(tiny_clip_dir):
    default = dict(server_options(server_config(tiny_clip_dir)))
    assert default["grpc.http2.min_ping_interval_without_data_ms"] == 5000
    assert default["grpc.keepalive_permit_without_calls"] == 1
    assert "grpc.max_connection_age_ms" not in default  # off in a single process
    aged = dict(server_options(server_config(
        tiny_clip_dir, max_connection_age_s=300, max_connection_age_grace_s=30)))
    assert aged["grpc.max_connection_age_ms"] == 300_000
    assert aged["grpc.max_connection_age_grace_ms"] == 30_000
    no_grace_limit = dict(server_options(server_config(tiny_clip_dir, max_connection_age_s=60)))
    assert "grpc.max_connection_age_grace_ms" not in no_grace_limit  # gRPC's default: no limit


async def idle_stream(target: str, idle_s: float) -> int:
    """One message, `idle_s` of silence on the open stream (pings only), one more message;
    returns how many answers came back."""
    resume = asyncio.Event()

    async def messages():
        yield pb.EmbedStreamRequest(items=[pb.Item(id="before", text="a red circle")])
        await resume.wait()
        yield pb.EmbedStreamRequest(items=[pb.Item(id="after", text="a blue square")])

    answers = 0
    async with grpc.aio.insecure_channel(target, options=PINGING_CLIENT) as channel:
        stream = clip_pb2_grpc.ClipServiceStub(channel).EmbedStream(messages(), timeout=60)
        async for answer in stream:
            answers += 1
            assert answer.results[0].HasField("embedding")
            if answers == 1:
                await asyncio.sleep(idle_s)
                resume.set()
    return answers


async def test_a_client_pinging_within_the_bound_keeps_its_idle_stream(
        tiny_clip_dir, tiny_clip):
    # Scaled down 10x: the server accepts pings every 0.5 s, the client pings every 1 s
    # (as the default 5 s bound and clip-as-service's 10 s pings).
    config = server_config(tiny_clip_dir, min_ping_interval_s=0.5)
    async with running_server(config, loaded=tiny_clip) as server:
        assert await idle_stream(server.target, idle_s=6) == 2


async def test_a_client_pinging_faster_than_the_bound_is_cut(tiny_clip_dir, tiny_clip):
    # The control: the same client against a bound of 5 s gets GOAWAY too_many_pings.
    async with running_server(server_config(tiny_clip_dir), loaded=tiny_clip) as server:
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await idle_stream(server.target, idle_s=6)
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE


class ConnectionBalancer:
    """What a Kubernetes ClusterIP does: each new TCP connection goes to the next backend."""

    def __init__(self):
        self.backends: list[int] = []
        self._next = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self):
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self._server.close()

    async def _relay(self, client_reader, client_writer):
        backend = self.backends[self._next % len(self.backends)]
        self._next += 1
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", backend)
        except OSError:
            client_writer.close()
            return

        async def pipe(reader, writer):
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(pipe(client_reader, server_writer),
                             pipe(server_reader, client_writer))


def embedded(server) -> float:
    return server.metrics.registry.get_sample_value(
        "clip_grpc_items_embedded_total", {"modality": "text"})


async def calls_until_second_replica(age_s: float, give_up_s: float, tiny_clip_dir, tiny_clip):
    """A long-lived channel through the balancer calls Embed every 50 ms; a second replica
    joins after the first calls. Returns (calls answered by the second replica, failed calls)."""
    config = server_config(tiny_clip_dir, max_connection_age_s=age_s,
                           max_connection_age_grace_s=age_s)
    async with ConnectionBalancer() as balancer, \
            running_server(config, loaded=tiny_clip) as first, \
            running_server(config, loaded=tiny_clip) as second:  # fmt: skip
        balancer.backends.append(first.port)
        failures = 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{balancer.port}") as channel:
            stub = clip_pb2_grpc.ClipServiceStub(channel)
            request = pb.EmbedRequest(items=[pb.Item(id="t", text="a red circle")])
            await stub.Embed(request, timeout=30)
            balancer.backends.append(second.port)  # the replica "started later"
            loop = asyncio.get_running_loop()
            deadline = loop.time() + give_up_s
            while loop.time() < deadline and not embedded(second):
                try:
                    await stub.Embed(request, timeout=30, wait_for_ready=True)
                except grpc.aio.AioRpcError:
                    failures += 1
                await asyncio.sleep(0.05)
        return embedded(second), failures


async def test_connection_ageing_lets_a_long_lived_client_find_a_new_replica(
        tiny_clip_dir, tiny_clip):
    reached, failures = await calls_until_second_replica(1.0, 60, tiny_clip_dir, tiny_clip)
    assert reached >= 1 and failures == 0


async def test_without_ageing_the_client_stays_on_its_first_replica(tiny_clip_dir, tiny_clip):
    # The control: the same client and balancer, connections never aged, for 3 s (3 ages).
    reached, failures = await calls_until_second_replica(0.0, 3, tiny_clip_dir, tiny_clip)
    assert reached == 0 and failures == 0
