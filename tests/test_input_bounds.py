"""Texts bounded by characters before tokenising, requests that can never fit the queue, and work
for callers that went away (cancelled, deadline passed) is not done."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from clip_grpc.engine import Engine, Input
from clip_grpc.errors import InvalidInput
from clip_grpc.server import running_server
from clip_grpc.v1 import clip_pb2 as pb
from clip_grpc.v1 import clip_pb2_grpc
from tests.conftest import image_bytes, server_config
from tests.waiting import until

MIB = 1024 * 1024


class RecordingTokenizer:
    """Wraps the real tokenizer and remembers the longest text it was given."""

    def __init__(self, tokenizer):
        self.tokenizer, self.longest = tokenizer, 0

    def __call__(self, text, **kwargs):
        self.longest = max(self.longest, len(text))
        return self.tokenizer(text, **kwargs)


@pytest.fixture
async def engine(tiny_clip_dir, tiny_clip):
    engine = Engine(tiny_clip, server_config(tiny_clip_dir, max_queue_size=16))
    await engine.start()
    engine.tokenize.tokenizer = RecordingTokenizer(engine.tokenize.tokenizer)
    yield engine
    await engine.close()


async def test_a_64_mib_text_is_refused_before_tokenising(engine):
    huge = "a photo of a cat " * (64 * MIB // 17)
    cpu = time.process_time()
    (refused,) = await engine.embed([Input("huge", text=huge)])
    cpu = time.process_time() - cpu
    assert isinstance(refused, InvalidInput) and refused.field == "text"
    assert f"text is {len(huge)} characters; the limit is 4096" in refused.message
    assert engine.tokenize.tokenizer.longest == 0
    assert cpu < 1.0  # tokenising it in full took minutes and GBs


async def test_with_truncate_a_huge_text_is_cut_first_and_embeds_like_its_start(engine):
    huge = "a photo of a red circle on a blue square " * (16 * MIB // 41)
    cut, start = await engine.embed(
        [Input("huge", text=huge), Input("start", text=huge[:4096])], truncate=True
    )
    assert engine.tokenize.tokenizer.longest == 4096
    assert cut.shape == (16,)
    assert abs(float(cut @ start) - 1.0) < 1e-5


async def test_the_character_bound_is_a_setting(tiny_clip_dir, tiny_clip):
    engine = Engine(tiny_clip, server_config(tiny_clip_dir, max_text_chars=10))
    with pytest.raises(InvalidInput, match="the limit is 10"):
        engine.tokenize("eleven char")
    assert engine.tokenize("ten chars!")


async def test_a_request_larger_than_the_queue_is_invalid_naming_the_limit(engine):
    too_many = [Input(str(i), text="a") for i in range(17)]
    with pytest.raises(InvalidInput) as caught:
        await engine.embed(too_many)
    assert "17 items" in caught.value.message and "at most 16" in caught.value.message
    assert "--max-queue-size" in caught.value.message and caught.value.field == "items"
    assert len(await engine.embed(too_many[:16])) == 16


async def test_over_grpc_the_request_too_large_for_the_queue_is_invalid_argument(
    tiny_clip_dir, tiny_clip
):
    config = server_config(tiny_clip_dir, max_queue_size=8)
    async with running_server(config, tiny_clip) as server, \
            grpc.aio.insecure_channel(server.target) as channel:  # fmt: skip
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Embed(pb.EmbedRequest(items=[pb.Item(text="a")] * 9))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 8" in caught.value.details()

        async def requests():
            yield pb.EmbedStreamRequest(items=[pb.Item(id="x", text="a")] * 9)
            yield pb.EmbedStreamRequest(items=[pb.Item(id="y", text="a")])

        too_big, fine = [r async for r in stub.EmbedStream(requests())]
        invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert {r.error.code for r in too_big.results} == {invalid}
        assert fine.results[0].embedding.dim == 16


@pytest.mark.parametrize("how", ["deadline", "cancel"])
async def test_items_of_a_call_that_went_away_are_not_decoded(tiny_clip_dir, tiny_clip, how):
    config = server_config(tiny_clip_dir, preprocess_workers=1)
    async with running_server(config, tiny_clip) as server, \
            grpc.aio.insecure_channel(server.target) as channel:  # fmt: skip
        engine, decoded = server.engine, []
        prepare = engine._prepare_image

        def counting_prepare(data):
            decoded.append(1)
            time.sleep(0.02)  # each image costs at least this much
            return prepare(data)

        engine._prepare_image = counting_prepare
        items = [pb.Item(id=str(i), image=image_bytes(size=(64, 64))) for i in range(200)]
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        call = stub.Embed(pb.EmbedRequest(items=items), timeout=0.5 if how == "deadline" else None)
        await until(lambda: decoded, every=0.005)
        if how == "cancel":
            call.cancel()
        with pytest.raises((grpc.aio.AioRpcError, asyncio.CancelledError)):
            await call
        await until(lambda: not engine.in_flight, every=0.005)  # the server let go of the call
        seen = len(decoded)
        await asyncio.sleep(0.5)
        assert len(decoded) == seen < 100, "decoding went on for a caller that was gone"
