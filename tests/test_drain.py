"""SIGTERM loses nothing: a real server subprocess with calls in flight finishes every call it
accepted before exiting; new calls get UNAVAILABLE; when the grace runs out, what is left is
refused with UNAVAILABLE, never cancelled or dropped."""

from __future__ import annotations

import asyncio
import functools
import io
import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from clip_grpc.engine import GRACE_OVER
from clip_grpc.server import running_server
from clip_grpc.v1 import clip_pb2 as pb
from clip_grpc.v1 import clip_pb2_grpc
from tests.conftest import server_config
from tests.scripted_model import scripted
from tests.server_process import ServerProcess
from tests.waiting import until

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@functools.lru_cache(maxsize=16)
def gradient_png(side: int, shade: int) -> bytes:
    """A small file that costs side x side pixels to decode and resize."""
    image = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    image.paste((shade, 0, 0), (0, 0, 8, 8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def embed_request(call: int, side: int) -> pb.EmbedRequest:
    return pb.EmbedRequest(items=[
        pb.Item(id=f"{call}-{i}", image=gradient_png(side, 60 * i)) for i in range(4)
    ])  # fmt: skip


async def outcome(call) -> tuple[str, str]:
    """(status name, details) of a finished call; OK only with its 4 embeddings."""
    try:
        response = await call
    except grpc.aio.AioRpcError as error:
        return error.code().name, error.details() or ""
    assert [r.embedding.dim for r in response.results] == [16] * 4
    return "OK", ""


async def first_done(calls):
    done, _ = await asyncio.wait(
        [asyncio.ensure_future(c) for c in calls], return_when=asyncio.FIRST_COMPLETED
    )
    return done


@pytest.fixture
def server(tiny_clip_dir, request):
    process = ServerProcess(tiny_clip_dir, "--preprocess-workers", "2", *request.param)
    try:
        process.wait_serving()
        yield process
    finally:
        process.kill()


async def stream_requests(messages: int):
    for i in range(messages):
        yield pb.EmbedStreamRequest(items=embed_request(1000 + i, 400).items)


async def read_all(stream) -> tuple[list, grpc.StatusCode]:
    responses = []
    while (response := await stream.read()) != grpc.aio.EOF:
        responses.append(response)
    return responses, await stream.code()


@pytest.mark.parametrize("server", [("--grace-seconds", "60")], indirect=True)
async def test_sigterm_with_200_unary_calls_and_a_stream_in_flight_cancels_none(server):
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        stream = stub.EmbedStream(stream_requests(60))
        first = await stream.read()
        calls = [asyncio.ensure_future(stub.Embed(embed_request(i, 400))) for i in range(200)]
        await first_done(calls)
        server.process.send_signal(signal.SIGTERM)
        finished_before = sum(call.done() for call in calls)
        outcomes = [await outcome(call) for call in calls]
        streamed, stream_code = await read_all(stream)
        exit_code = await asyncio.to_thread(server.process.wait, 60)
    statuses = [status for status, _ in outcomes]
    assert "CANCELLED" not in statuses
    assert exit_code == 0
    # Calls that had reached the server but were not yet started when the signal came are
    # refused as new calls, saying so, with UNAVAILABLE (which clients retry elsewhere); every
    # call it had started finishes, however long the queue (the grace is not reached).
    assert set(statuses) <= {"OK", UNAVAILABLE.name}, set(statuses)
    refused = [details for status, details in outcomes if status != "OK"]
    assert all("takes no new calls" in details for details in refused), refused[:3]
    assert statuses.count("OK") > finished_before, "no call was in flight at the signal"
    # The stream had started: every one of its 60 messages is answered, and it ends OK.
    assert stream_code == grpc.StatusCode.OK and len([first, *streamed]) == 60
    assert all(r.embedding.dim == 16 for m in [first, *streamed] for r in m.results)
    assert "grace period over: refusing what is left" not in server.messages()


async def test_every_call_accepted_before_shutdown_finishes(tiny_clip_dir, tiny_clip):
    config = server_config(tiny_clip_dir, preprocess_workers=2)
    async with running_server(config, tiny_clip) as running, \
            grpc.aio.insecure_channel(running.target) as channel:  # fmt: skip
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        model_busy = threading.Event()  # no batch runs until every call has started
        running.engine._model_thread.submit(model_busy.wait, 60)
        calls = [asyncio.ensure_future(stub.Embed(embed_request(i, 64))) for i in range(200)]
        await until(lambda: running.gate.active == 200)
        stopping = asyncio.create_task(running.stop(grace=120))
        await until(lambda: not running.gate.is_open)
        model_busy.set()
        await stopping
        assert [await outcome(call) for call in calls] == [("OK", "")] * 200


@pytest.mark.parametrize("server", [("--grace-seconds", "1.5")], indirect=True)
async def test_when_the_grace_runs_out_what_is_left_is_refused_not_lost(server):
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        calls = [asyncio.ensure_future(stub.Embed(embed_request(i, 1200))) for i in range(200)]
        await first_done(calls)
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        outcomes = [await outcome(call) for call in calls]
        exit_code = await asyncio.to_thread(server.process.wait, 60)
    statuses = [status for status, _ in outcomes]
    assert set(statuses) <= {"OK", UNAVAILABLE.name}, set(statuses)  # none CANCELLED
    grace_over = [d for s, d in outcomes if "grace period ran out" in d]
    assert grace_over, "the queue should not have finished within 1.5 s"
    assert exit_code == 0 and time.monotonic() - signalled < 30
    assert "grace period over: refusing what is left" in server.messages()


async def test_queued_items_get_grace_over_not_silence_when_the_grace_runs_out(
    tiny_clip_dir, tiny_clip, monkeypatch
):
    # Deterministic, where the test above depends on the queue being slower than its grace:
    # the model holds one batch until the grace is over, so every other call is still queued.
    images = scripted(monkeypatch, "embed_images")
    config = server_config(tiny_clip_dir, preprocess_workers=2)
    async with running_server(config, tiny_clip) as running, \
            grpc.aio.insecure_channel(running.target) as channel:  # fmt: skip
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        release = images.hold_next()
        one_image = pb.EmbedRequest(items=embed_request(0, 64).items[:1])  # a batch on its own
        held = asyncio.ensure_future(stub.Embed(one_image))
        await images.wait_holding()
        calls = [asyncio.ensure_future(stub.Embed(embed_request(i, 64))) for i in range(1, 41)]
        await until(lambda: running.engine.image_batcher.queued() == 160)  # 40 calls x 4 items
        stopping = asyncio.create_task(running.stop(grace=2))
        await until(lambda: running.engine.refusing)  # the grace is over: the queue refused
        release.set()  # the batch in the model finishes (within the last second): it had started
        outcomes = [await outcome(call) for call in calls]
        assert [r.embedding.dim for r in (await held).results] == [16]
        await asyncio.wait_for(stopping, 60)
    assert outcomes == [(UNAVAILABLE.name, GRACE_OVER)] * 40


async def test_new_calls_get_unavailable_and_health_not_serving_while_draining(
    tiny_clip_dir, tiny_clip
):
    async with running_server(server_config(tiny_clip_dir), tiny_clip) as running, \
            grpc.aio.insecure_channel(running.target) as channel:  # fmt: skip
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        held = running.gate
        with held.counting():  # a call in flight keeps the server draining
            stopping = asyncio.create_task(running.stop(grace=30))
            await until(lambda: not held.is_open)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Info(pb.InfoRequest())
            assert caught.value.code() == UNAVAILABLE
            assert "shutting down" in caught.value.details()
            check = await health.Check(health_pb2.HealthCheckRequest())
            assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert not stopping.done()
        await asyncio.wait_for(stopping, 10)
