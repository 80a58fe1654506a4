"""A real grpc.aio server on port 0: the RPCs, health, reflection, and grpcurl."""

import asyncio
import base64
import json
import math
import shutil
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clip_grpc.server import running_server, start_server
from clip_grpc.v1 import clip_pb2 as pb
from clip_grpc.v1 import clip_pb2_grpc
from tests.conftest import image_bytes, server_config
from tests.waiting import until

GRPCURL = shutil.which("grpcurl") or str(Path(__file__).parents[1] / ".venv/bin/grpcurl")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
async def channel(clip_server):
    async with grpc.aio.insecure_channel(clip_server.target) as opened:
        yield opened


@pytest.fixture(scope="module")
def stub(channel):
    return clip_pb2_grpc.ClipServiceStub(channel)


def vector(result) -> np.ndarray:
    return np.frombuffer(result.embedding.packed, "<f4")


async def test_embed_returns_one_result_per_item_in_order(stub):
    items = [
        pb.Item(id="t", text="a photo of a cat"),
        pb.Item(id="i", image=image_bytes()),
        pb.Item(id="bad", image=b"\x89PNG broken"),
        pb.Item(id="empty"),
    ]
    response = await stub.Embed(pb.EmbedRequest(items=items))
    assert [r.id for r in response.results] == ["t", "i", "bad", "empty"]
    for good in response.results[:2]:
        assert good.embedding.dim == 16 and vector(good).shape == (16,)
        assert np.linalg.norm(vector(good)) == pytest.approx(1, abs=1e-5)
    bad, empty = response.results[2].error, response.results[3].error
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and bad.field == "image"
    assert empty.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "neither" in empty.message


async def test_float_list_format_carries_the_same_numbers(stub):
    item = pb.Item(id="t", text="a photo of a cat")
    packed = await stub.Embed(pb.EmbedRequest(items=[item]))
    listed = await stub.Embed(pb.EmbedRequest(
        items=[item], options=pb.EmbedOptions(format=pb.EMBEDDING_FORMAT_FLOAT_LIST)))
    assert listed.results[0].embedding.packed == b""
    np.testing.assert_array_equal(vector(packed.results[0]), listed.results[0].embedding.values)


async def test_text_too_long_names_the_item_unless_truncated(stub):
    item = pb.Item(id="long", text="many words " * 60)
    refused = await stub.Embed(pb.EmbedRequest(items=[item]))
    error = refused.results[0].error
    assert refused.results[0].id == "long" and "at most 77" in error.message
    assert error.field == "text"
    cut = await stub.Embed(pb.EmbedRequest(items=[item], options=pb.EmbedOptions(truncate=True)))
    assert cut.results[0].embedding.dim == 16


async def test_an_empty_request_is_invalid(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(pb.EmbedRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_embed_stream_keeps_order_and_survives_a_corrupt_image(stub):
    def request(i):
        if i == 517:
            return pb.EmbedStreamRequest(items=[pb.Item(id=str(i), image=b"corrupt")])
        if i % 3 == 0:
            image = image_bytes((i % 256,) * 3)
            return pb.EmbedStreamRequest(items=[pb.Item(id=str(i), image=image)])
        return pb.EmbedStreamRequest(items=[pb.Item(id=str(i), text=f"sentence number {i}")])

    async def requests():
        for i in range(1000):
            yield request(i)

    ids, errors = [], []
    async for response in stub.EmbedStream(requests()):
        (result,) = response.results
        ids.append(result.id)
        if result.HasField("error"):
            errors.append(result.id)
        else:
            assert vector(result).shape == (16,)
    assert ids == [str(i) for i in range(1000)]
    assert errors == ["517"]


async def test_stream_messages_may_carry_many_items(stub):
    async def requests():
        for chunk in range(5):
            yield pb.EmbedStreamRequest(
                items=[pb.Item(id=f"{chunk}-{i}", text=f"text {i}") for i in range(50)])

    responses = [r async for r in stub.EmbedStream(requests())]
    assert [len(r.results) for r in responses] == [50] * 5
    assert responses[3].results[7].id == "3-7"


async def test_streamed_vectors_equal_unary_ones(stub):
    items = [pb.Item(id="a", text="a red square"), pb.Item(id="b", image=image_bytes())]
    unary = await stub.Embed(pb.EmbedRequest(items=items))

    async def requests():
        yield pb.EmbedStreamRequest(items=items)

    streamed = [r async for r in stub.EmbedStream(requests())][0]
    for one, other in zip(unary.results, streamed.results, strict=True):
        np.testing.assert_allclose(vector(one), vector(other), atol=1e-6)


async def test_rank_scores_match_the_definitions(stub, tiny_clip):
    texts = ["a red square", "a dog", "a blue circle", "nothing"]
    query = pb.Item(id="q", image=image_bytes())
    request = pb.RankRequest(
        query=query, candidates=[pb.Item(id=f"c{i}", text=t) for i, t in enumerate(texts)])
    response = await stub.Rank(request)
    assert response.query_id == "q"
    assert sorted(c.index for c in response.candidates) == [0, 1, 2, 3]
    cosines = [c.cosine for c in response.candidates]
    assert cosines == sorted(cosines, reverse=True)

    embedded = await stub.Embed(pb.EmbedRequest(items=[query, *request.candidates]))
    q, *cands = (vector(r) for r in embedded.results)
    expected_cos = [float(c @ q) for c in cands]
    logits = [tiny_clip.logit_scale * c for c in expected_cos]
    softmax = [math.exp(v) / sum(math.exp(w) for w in logits) for v in logits]
    for candidate in response.candidates:
        assert candidate.id == f"c{candidate.index}"
        assert candidate.cosine == pytest.approx(expected_cos[candidate.index], abs=1e-5)
        assert candidate.probability == pytest.approx(softmax[candidate.index], abs=1e-5)
        assert candidate.score == round(100 * max(candidate.cosine, 0))
    assert sum(c.probability for c in response.candidates) == pytest.approx(1, abs=1e-5)


async def test_rank_errors_name_the_bad_candidate(stub):
    request = pb.RankRequest(
        query=pb.Item(id="q", text="a cat"),
        candidates=[pb.Item(id="fine", text="a"), pb.Item(id="broken", image=b"nope")])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Rank(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "candidates[1]" in caught.value.details() and "broken" in caught.value.details()
    assert dict(caught.value.trailing_metadata())["clip-error-field"] == "candidates[1].image"
    for bad in (pb.RankRequest(candidates=[pb.Item(text="a")]),
                pb.RankRequest(query=pb.Item(text="a"))):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Rank(bad)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_rank_stream_reports_errors_per_ranking(stub):
    async def requests():
        for i in range(6):
            candidates = [pb.Item(text="a cat"), pb.Item(text="a dog")]
            if i == 2:
                candidates.append(pb.Item(text=""))
            yield pb.RankStreamRequest(query=pb.Item(id=f"q{i}", text="cat"),
                                       candidates=candidates)

    responses = [r async for r in stub.RankStream(requests())]
    assert [r.query_id for r in responses] == [f"q{i}" for i in range(6)]
    assert [r.HasField("error") for r in responses] == [False, False, True, False, False, False]
    assert "candidates[2]" in responses[2].error.message
    assert len(responses[0].candidates) == 2


async def test_info_describes_model_and_limits(stub, clip_server):
    info = await stub.Info(pb.InfoRequest())
    assert (info.model_family, info.embedding_dim, info.image_size) == ("clip", 16, 32)
    assert info.text_context_length == 77 and info.dtype == "fp32" and info.device == "cpu"
    assert info.max_batch_size == max(clip_server.engine.batch_limits.values()) == 32  # CPU
    assert info.max_image_bytes == 20 * 1024 * 1024 and info.server_version
    assert info.logit_scale > 1


async def test_a_full_queue_answers_resource_exhausted_at_once(tiny_clip_dir, tiny_clip):
    config = server_config(tiny_clip_dir, max_queue_size=8)
    async with running_server(config, loaded=tiny_clip) as server, \
            grpc.aio.insecure_channel(server.target) as channel:
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        with server.engine.admit(8), pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Embed(pb.EmbedRequest(items=[pb.Item(text="a")]))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        async def requests():
            yield pb.EmbedStreamRequest(items=[pb.Item(id="x", text="a")] * 2)
            yield pb.EmbedStreamRequest(items=[pb.Item(id="y", text="a")])

        with server.engine.admit(7):
            stream = stub.EmbedStream(requests())
            refused = await stream.read()
        accepted = await stream.read()
        exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert {r.error.code for r in refused.results} == {exhausted}
        assert accepted.results[0].embedding.dim == 16


async def test_health_goes_not_serving_serving_not_serving(tiny_clip_dir, tiny_clip):
    running = await start_server(server_config(tiny_clip_dir))
    try:
        async with grpc.aio.insecure_channel(running.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            clip = clip_pb2_grpc.ClipServiceStub(channel)
            for service in ("", "clip_grpc.v1.ClipService"):
                check = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert check.status == NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await clip.Info(pb.InfoRequest())
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

            await running.load(tiny_clip)
            check = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert check.status == SERVING
            watch = health.Watch(health_pb2.HealthCheckRequest(service="clip_grpc.v1.ClipService"))
            assert (await watch.read()).status == SERVING
            stopping = asyncio.create_task(running.stop(grace=0.5))
            assert (await watch.read()).status == NOT_SERVING
            await stopping
    finally:
        await running.server.stop(None)


async def test_in_flight_work_drains_on_shutdown(tiny_clip_dir, tiny_clip):
    running = await start_server(server_config(tiny_clip_dir))
    await running.load(tiny_clip)
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        items = [pb.Item(id=str(i), image=image_bytes(size=(600, 600))) for i in range(64)]
        call = asyncio.ensure_future(stub.Embed(pb.EmbedRequest(items=items)))
        await until(lambda: running.engine.in_flight, every=0.001)
        # Begins while the 64 items are in flight; the grace only bounds the wait (stop
        # returns as soon as they are done), so it is generous for a loaded machine.
        await running.stop(grace=120)
        response = await call
    assert len(response.results) == 64 and all(r.HasField("embedding") for r in response.results)


async def test_siglip_serves_and_ranks_with_sigmoid(tiny_siglip_dir):
    async with running_server(server_config(tiny_siglip_dir)) as server, \
            grpc.aio.insecure_channel(server.target) as channel:
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        info = await stub.Info(pb.InfoRequest())
        assert info.model_family == "siglip" and info.text_context_length == 64
        ranked = await stub.Rank(pb.RankRequest(
            query=pb.Item(image=image_bytes()), candidates=[pb.Item(text="a"), pb.Item(text="b")]))
        for candidate in ranked.candidates:
            logit = info.logit_scale * candidate.cosine + info.logit_bias
            assert candidate.probability == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-5)


def grpcurl(*args: str) -> str:
    done = subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_reflection_and_grpcurl(clip_server):
    target = clip_server.target
    services = (await asyncio.to_thread(grpcurl, target, "list")).split()
    assert {"clip_grpc.v1.ClipService", "grpc.health.v1.Health"} <= set(services)
    health = json.loads(await asyncio.to_thread(
        grpcurl, target, "grpc.health.v1.Health/Check"))
    assert health == {"status": "SERVING"}
    request = json.dumps({"items": [
        {"id": "t", "text": "a photo of a cat"},
        {"id": "i", "image": base64.b64encode(image_bytes()).decode()},
    ], "options": {"format": "EMBEDDING_FORMAT_FLOAT_LIST"}})
    response = json.loads(await asyncio.to_thread(
        grpcurl, "-d", request, target, "clip_grpc.v1.ClipService/Embed"))
    assert [r["id"] for r in response["results"]] == ["t", "i"]
    assert all(len(r["embedding"]["values"]) == 16 for r in response["results"])


async def test_each_rpc_writes_one_access_log_line(stub, caplog):
    caplog.set_level("INFO", logger="clip_grpc.access")
    await stub.Embed(pb.EmbedRequest(items=[pb.Item(text="a")]),
                     metadata=(("x-request-id", "req-42"),))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Embed(pb.EmbedRequest(), metadata=(("x-request-id", "req-43"),))
    lines = {r.request_id: r for r in caplog.records if r.name == "clip_grpc.access"}
    assert lines["req-42"].method == "Embed" and lines["req-42"].status == "OK"
    assert lines["req-43"].status == "INVALID_ARGUMENT"
    assert lines["req-42"].ms >= 0
