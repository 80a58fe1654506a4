"""A model failure inside one batch (CUDA running out of memory, say) reaches every caller whose
items were in that batch as a per-item INTERNAL error; their other items, later batches and the
server itself go on."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clip_grpc.server import running_server
from clip_grpc.v1 import clip_pb2 as pb
from clip_grpc.v1 import clip_pb2_grpc
from tests.conftest import image_bytes, server_config
from tests.scripted_model import scripted
from tests.waiting import until

INTERNAL = grpc.StatusCode.INTERNAL.value[0]
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity)"


@pytest.fixture
def scripted_texts(monkeypatch):
    return scripted(monkeypatch, "embed_texts")


def texts(*names: str) -> list[pb.Item]:
    return [pb.Item(id=name, text=f"a photo of {name}") for name in names]


def outcome(result: pb.EmbedResult) -> tuple[str, object]:
    if result.HasField("embedding"):
        return result.id, result.embedding.dim
    return result.id, (result.error.code, result.error.message)


async def test_an_out_of_memory_batch_fails_its_items_alone_and_the_server_goes_on(
    tiny_clip_dir, tiny_clip, scripted_texts, caplog
):
    failed = (INTERNAL, "internal error while embedding this item")
    config = server_config(tiny_clip_dir)
    async with running_server(config, tiny_clip) as running, \
            grpc.aio.insecure_channel(running.target) as channel:  # fmt: skip
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        release = scripted_texts.hold_next()
        scripted_texts.fail_next(RuntimeError(OOM))
        blocker = asyncio.ensure_future(stub.Embed(pb.EmbedRequest(items=texts("blocker"))))
        await scripted_texts.wait_holding()
        # Three callers, two unary and a stream, whose texts queue behind the held batch.
        more = asyncio.Event()

        async def stream_messages():
            yield pb.EmbedStreamRequest(items=texts("c1"))
            await more.wait()
            yield pb.EmbedStreamRequest(items=texts("c2"))

        stream = stub.EmbedStream(stream_messages())
        mixed = asyncio.ensure_future(stub.Embed(pb.EmbedRequest(
            items=[*texts("a1"), pb.Item(id="a-image", image=image_bytes())])))
        only_texts = asyncio.ensure_future(stub.Embed(pb.EmbedRequest(items=texts("b1", "b2"))))
        await until(lambda: running.engine.text_batcher.queued() == 4)
        with caplog.at_level(logging.ERROR):
            release.set()
            assert [outcome(r) for r in (await blocker).results] == [("blocker", 16)]
            assert [outcome(r) for r in (await mixed).results] == [
                ("a1", failed), ("a-image", 16)]  # the image was in another batch
            assert [outcome(r) for r in (await only_texts).results] == [
                ("b1", failed), ("b2", failed)]
            assert [outcome(r) for r in (await stream.read()).results] == [("c1", failed)]
        assert scripted_texts.failed_sizes == [4]  # the four texts were the one failed batch
        assert OOM in caplog.text  # the operator sees the cause; callers never see internals
        # The stream, the server and its health all go on; later batches use the model again.
        more.set()
        assert [outcome(r) for r in (await stream.read()).results] == [("c2", 16)]
        assert await stream.read() == grpc.aio.EOF and await stream.code() == grpc.StatusCode.OK
        later = await stub.Embed(pb.EmbedRequest(items=texts("d1", "d2")))
        assert [outcome(r) for r in later.results] == [("d1", 16), ("d2", 16)]
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        errors = running.metrics.registry.get_sample_value
        assert errors("clip_grpc_item_errors_total", {"code": "INTERNAL"}) == 4
