"""The REST bridge end to end: real HTTP sockets, a real gRPC server on the tiny CLIP."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.testing import bind_unused_port

from clip_grpc.server import running_server
from clip_grpc.v1 import clip_pb2
from rest_bridge.backend import ClipBackend
from rest_bridge.openapi import openapi_document
from tests.bridge_process import StandInClip, stand_in_server
from tests.conftest import image_bytes, server_config
from tests.rest_helpers import encode_form, error_of, grpc_vectors, running_bridge
from tests.waiting import until

RED, BLUE = image_bytes((220, 20, 20)), image_bytes((20, 20, 220), fmt="JPEG")
LONG_TEXT = "moon " * 100  # about 100 tokens: over CLIP's 77


@pytest.fixture(scope="module")
async def dim(stub):
    return (await stub.Info(clip_pb2.InfoRequest())).embedding_dim


def spec_request() -> tuple[dict, bytes]:
    """Seed 002's example request, boundary and file name included."""
    boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="image-1"; filename="Firefly man staring at the '
        'moon, moon is made of mechanical parts 74156.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode() + BLUE + (
        f"\r\n--{boundary}\r\n"
        'Content-Disposition: form-data; name="text-1"\r\n\r\n'
        "Man staring at the moon, moon is made of mechanical parts\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    headers = {"request_id": "1", "Content-Type": f"multipart/form-data; boundary={boundary}"}
    return headers, body


# ---- the multipart endpoint --------------------------------------------------------------
async def test_the_spec_example(bridge, stub, dim):
    headers, body = spec_request()
    response = await bridge.fetch("/syte_test/clip", method="POST", headers=headers, body=body)
    assert response.code == 200
    assert response.headers["request_id"] == "1"
    assert response.headers["Content-Type"] == "application/json"
    answer = json.loads(response.body)
    assert set(answer) == {"image_1_vector", "text_1_vector", "image_vector_1_similarity_score",
                           "image_vector_1_cosine"}
    image, text = (np.asarray(answer[k], np.float32) for k in ("image_1_vector", "text_1_vector"))
    assert image.shape == text.shape == (dim,)
    # The server's vectors (up to float32 rounding between batch shapes), and the score
    # follows from them.
    expected = await grpc_vectors(stub, [
        clip_pb2.Item(id="i", image=BLUE),
        clip_pb2.Item(id="t", text="Man staring at the moon, moon is made of mechanical parts")])
    np.testing.assert_allclose(image, expected[0], atol=1e-6)
    np.testing.assert_allclose(text, expected[1], atol=1e-6)
    cos = float(np.dot(expected[0].astype(np.float64), expected[1]))
    assert answer["image_vector_1_cosine"] == pytest.approx(cos, abs=1e-6)
    score = answer["image_vector_1_similarity_score"]
    assert isinstance(score, int) and 0 <= score <= 100
    assert score == round(100 * max(cos, 0.0))


async def test_many_ids_with_images_texts_or_both(bridge, dim):
    response = await bridge.post_form(
        texts={"text-1": "a red square", "text-b.2": "blue", "text-only": "just words"},
        files={"image-1": RED, "image-b.2": BLUE, "image-pic_3": RED},
    )
    assert response.code == 200
    answer = json.loads(response.body)
    assert set(answer) == {
        "image_1_vector", "text_1_vector", "image_vector_1_similarity_score",
        "image_vector_1_cosine", "image_b.2_vector", "text_b.2_vector",
        "image_vector_b.2_similarity_score", "image_vector_b.2_cosine",
        "image_pic_3_vector", "text_only_vector"}
    assert all(len(v) == dim for k, v in answer.items() if k.endswith("_vector"))
    # Same image bytes, same vector: equal up to float32 rounding, since the two copies may run
    # in batches of different sizes, whose matmuls sum in a different order (seen in CI-like runs).
    np.testing.assert_allclose(answer["image_1_vector"], answer["image_pic_3_vector"], atol=1e-6)


async def test_image_only_and_text_only(bridge, dim):
    answer = json.loads((await bridge.post_form(files={"image-7": RED})).body)
    assert list(answer) == ["image_7_vector"] and len(answer["image_7_vector"]) == dim
    answer = json.loads((await bridge.post_form(texts={"text-7": "hello"})).body)
    assert list(answer) == ["text_7_vector"] and len(answer["text_7_vector"]) == dim


async def test_a_uuid_request_id_when_none_is_sent(bridge):
    first = await bridge.post_form(texts={"text-1": "hello"})
    second = await bridge.post_form(texts={"text-1": "hello"})
    assert first.code == second.code == 200
    ids = {uuid.UUID(r.headers["request_id"]) for r in (first, second)}
    assert len(ids) == 2


async def test_long_texts_need_truncate(bridge, dim):
    response = await bridge.post_form(texts={"text-1": LONG_TEXT})
    error = error_of(response)
    assert (response.code, error["code"], error["field"]) == (400, "INVALID_ARGUMENT", "text-1")
    assert "truncate" in error["message"]
    response = await bridge.post_form({"text-1": LONG_TEXT}, path="/syte_test/clip?truncate=true")
    assert response.code == 200
    assert len(json.loads(response.body)["text_1_vector"]) == dim


@pytest.mark.parametrize(
    ("texts", "files", "headers", "status", "field"),
    [
        ({}, {}, {}, 400, None),
        ({"img-1": "x"}, {}, {}, 400, "img-1"),
        ({}, {"text-1": RED}, {}, 400, "text-1"),
        ({"image-1": "not a file"}, {}, {}, 400, "image-1"),
        ({"text-a b": "x"}, {}, {}, 400, "text-a b"),
        ({"text-1": "x"}, {}, {"request_id": "abc"}, 400, "request_id"),
        ({"text-1": "x"}, {"image-3": b"corrupt bytes"}, {}, 400, "image-3"),
        ({"text-1": b"\xc3\x28"}, {}, {}, 400, "text-1"),
    ],
)
async def test_bad_forms_get_a_json_400_naming_the_field(bridge, texts, files, headers, status,
                                                         field):
    response = await bridge.post_form(texts, files, headers)
    error = error_of(response)
    assert (response.code, error["code"], error["field"]) == (status, "INVALID_ARGUMENT", field)
    if "request_id" in headers:  # a bad id is not echoed: the answer carries a fresh one
        uuid.UUID(response.headers["request_id"])


async def test_request_id_is_echoed_on_errors_too(bridge):
    response = await bridge.post_form({"bogus": "x"}, headers={"request_id": "42"})
    assert response.code == 400 and response.headers["request_id"] == "42"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("application/json", b'{"text-1": "x"}'), ("application/x-www-form-urlencoded", b"text-1=x")],
)
async def test_non_multipart_is_415(bridge, content_type, body):
    response = await bridge.fetch(
        "/syte_test/clip", method="POST", body=body, headers={"Content-Type": content_type})
    assert response.code == 415
    assert error_of(response)["code"] == "UNSUPPORTED_MEDIA_TYPE"


async def test_bad_truncate_flag_unknown_route_and_wrong_method(bridge):
    response = await bridge.post_form({"text-1": "x"}, path="/syte_test/clip?truncate=maybe")
    assert (response.code, error_of(response)["field"]) == (400, "truncate")
    response = await bridge.get("/nowhere")
    assert (response.code, error_of(response)["code"]) == (404, "NOT_FOUND")
    response = await bridge.get("/syte_test/clip")
    assert (response.code, error_of(response)["code"]) == (405, "METHOD_NOT_ALLOWED")


async def test_bodies_over_the_limit_get_413(clip_server):
    limit = 64 * 1024
    async with running_bridge(clip_server.target, max_body_bytes=limit) as small:
        assert (await small.post_form(files={"image-1": RED})).code == 200
        content_type, body = encode_form(files={"image-1": b"x" * (2 * limit)})
        # Content-Length over the limit: answered before the body is read.
        response = await small.fetch(
            "/syte_test/clip", method="POST", body=body, expect_100_continue=True,
            headers={"Content-Type": content_type})
        assert (response.code, error_of(response)["code"]) == (413, "PAYLOAD_TOO_LARGE")

        # Chunked: no Content-Length, counted as it arrives.
        async def produce(write):
            for start in range(0, len(body), 8192):
                await write(body[start:start + 8192])

        response = await small.fetch(
            "/v1/embed", method="POST", body_producer=produce,
            headers={"Content-Type": "application/json"})
        assert (response.code, error_of(response)["code"]) == (413, "PAYLOAD_TOO_LARGE")


async def test_concurrent_requests_get_their_own_answers(bridge, stub):
    texts = [f"picture number {i}" for i in range(16)]
    responses = await asyncio.gather(*(
        bridge.post_form({"text-1": text}, {"image-1": RED}, headers={"request_id": str(i)})
        for i, text in enumerate(texts)))
    expected = await grpc_vectors(stub, [clip_pb2.Item(id=t, text=t) for t in texts])
    for i, response in enumerate(responses):
        assert response.code == 200 and response.headers["request_id"] == str(i)
        vector = np.asarray(json.loads(response.body)["text_1_vector"], np.float32)
        # Batched with different neighbours: equal up to float32 rounding.
        np.testing.assert_allclose(vector, expected[i], atol=1e-6)


# ---- errors from the server side --------------------------------------------------------
class _FullQueue(StandInClip):
    async def Embed(self, request, context):
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the queue is full; retry later")


async def test_overload_is_429_with_retry_after():
    async with stand_in_server(_FullQueue()) as (target, _):
        async with running_bridge(target, retry_after_s=3) as small:
            response = await small.post_form({"text-1": "a", "text-2": "b"})
    assert (response.code, error_of(response)["code"]) == (429, "RESOURCE_EXHAUSTED")
    assert response.headers["Retry-After"] == "3"


async def test_a_form_larger_than_the_servers_queue_is_a_400(tiny_clip_dir, tiny_clip):
    # It could never fit: retrying would not help (issue 9), so no 429.
    config = server_config(tiny_clip_dir, max_queue_size=1)
    async with running_server(config, loaded=tiny_clip) as server:
        async with running_bridge(server.target) as small:
            response = await small.post_form({"text-1": "a", "text-2": "b"})
    assert (response.code, error_of(response)["code"]) == (400, "INVALID_ARGUMENT")
    assert "Retry-After" not in response.headers


async def test_a_missed_deadline_is_504(clip_server):
    async with running_bridge(clip_server.target, grpc_timeout_s=0.001) as hasty:
        response = await hasty.post_form({"text-1": "a"}, {"image-1": RED})
    assert (response.code, error_of(response)["code"]) == (504, "DEADLINE_EXCEEDED")


class _ExplodingStub:
    def __getattr__(self, name):
        def method(*args, **kwargs):
            raise RuntimeError("secret internals at /srv/app.py line 3")
        return method


async def test_a_bridge_bug_is_a_500_without_traceback(caplog):
    backend = ClipBackend(target="nowhere:1", clip=_ExplodingStub(), health=_ExplodingStub())
    async with running_bridge("nowhere:1", backend=backend) as broken:
        with caplog.at_level(logging.ERROR, logger="rest_bridge"):
            response = await broken.post_form({"text-1": "a"}, headers={"request_id": "77"})
    error = error_of(response)
    assert (response.code, error["code"]) == (500, "INTERNAL")
    assert "secret" not in response.body.decode() and "Traceback" not in response.body.decode()
    assert "77" in error["message"]
    assert "secret internals" in caplog.text  # the traceback goes to the log instead


async def test_readiness_outage_and_recovery(tiny_clip_dir, tiny_clip):
    sock, port = bind_unused_port()
    sock.close()
    config = server_config(tiny_clip_dir, port=port)
    async with running_bridge(f"127.0.0.1:{port}", grpc_max_reconnect_backoff_ms=300) as b:
        assert (await b.get("/healthz")).code == 200
        assert (await b.get("/readyz")).code == 503
        response = await b.post_form({"text-1": "a"})
        error = error_of(response)
        assert (response.code, error["code"]) == (503, "UNAVAILABLE")
        assert "Retry-After" in response.headers
        # Issue 9: the answer never names the internal address (gRPC's own message does).
        for answer in (response, await b.get("/readyz")):
            assert str(port) not in answer.body.decode() and "127.0.0.1" not in answer.body.decode()

        async with running_server(config, loaded=tiny_clip):
            assert (await until_ok(b.get, "/readyz")).code == 200
            assert (await b.post_form({"text-1": "a"})).code == 200
        # Server stopped behind the running bridge, then started again.
        assert (await b.post_form({"text-1": "a"})).code == 503
        assert (await b.get("/readyz")).code == 503
        async with running_server(config, loaded=tiny_clip):
            assert (await until_ok(b.post_form, {"text-1": "a"})).code == 200


async def until_ok(call, *args):
    async def ok():
        response = await call(*args)
        return response if response.code == 200 else None

    return await until(ok, every=0.1)


# ---- JSON transcoding ---------------------------------------------------------------------
def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_v1_embed_round_trip(bridge, stub, dim):
    payload = {"items": [{"id": "t", "text": "a red square"}, {"id": "i", "image": b64(RED)},
                         {"id": "bad", "image": b64(b"junk")}]}
    response = await bridge.post_json("/v1/embed", payload)
    assert response.code == 200
    results = json.loads(response.body)["results"]
    assert [r["id"] for r in results] == ["t", "i", "bad"]
    expected = await grpc_vectors(stub, [clip_pb2.Item(text="a red square"),
                                         clip_pb2.Item(image=RED)])
    for result, vector in zip(results, expected, strict=False):
        assert result["embedding"]["dim"] == dim
        values = np.asarray(result["embedding"]["values"], "<f4")
        np.testing.assert_allclose(values, vector, atol=1e-6)
    # One bad item does not fail the others: its error travels in its own result.
    assert results[2]["error"]["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert results[2]["error"]["field"] == "image"

    payload = {"items": [{"id": "t", "text": "a red square"}],
               "options": {"format": "EMBEDDING_FORMAT_PACKED_FLOAT32"}}
    result = json.loads((await bridge.post_json("/v1/embed", payload)).body)["results"][0]
    packed = np.frombuffer(base64.b64decode(result["embedding"]["packed"]), "<f4")
    np.testing.assert_allclose(packed, expected[0], atol=1e-6)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b'{"items": [', "application/json", 400, "not a valid EmbedRequest"),
        (b'{"itemz": []}', "application/json", 400, "itemz"),
        (b'{"items": [{"text": 5}]}', "application/json", 400, "not a valid"),
        (b"", "application/json", 400, "empty body"),
        (b'{"items": []}', "application/json", 400, "no items"),
        (b'{"items": []}', "text/plain", 415, "application/json"),
    ],
)
async def test_v1_embed_errors(bridge, body, content_type, status, words):
    response = await bridge.fetch(
        "/v1/embed", method="POST", body=body, headers={"Content-Type": content_type})
    assert response.code == status
    assert words in error_of(response)["message"]


async def test_v1_rank_round_trip(bridge):
    payload = {"query": {"id": "q", "text": "a red square"},
               "candidates": [{"id": "red", "image": b64(RED)}, {"id": "blue", "image": b64(BLUE)},
                              {"id": "words", "text": "a red square"}]}
    response = await bridge.post_json("/v1/rank", payload)
    assert response.code == 200
    answer = json.loads(response.body)
    assert answer["queryId"] == "q"
    ranked = answer["candidates"]
    assert sorted(c["index"] for c in ranked) == [0, 1, 2]
    assert ranked[0]["id"] == "words"  # the same text is the best match
    assert [c["cosine"] for c in ranked] == sorted((c["cosine"] for c in ranked), reverse=True)
    assert sum(c["probability"] for c in ranked) == pytest.approx(1.0, abs=1e-5)
    assert all(set(c) == {"id", "index", "cosine", "probability", "score"} for c in ranked)

    payload["candidates"][1]["image"] = b64(b"junk")
    response = await bridge.post_json("/v1/rank", payload)
    assert response.code == 400 and "candidates[1]" in error_of(response)["message"]
    assert error_of(response)["field"] == "candidates[1].image"


async def test_v1_info_and_openapi(bridge, dim):
    response = await bridge.get("/v1/info")
    assert response.code == 200
    info = json.loads(response.body)
    assert info["embeddingDim"] == dim and info["modelFamily"] == "clip"
    properties = openapi_document()["components"]["schemas"]["InfoResponse"]["properties"]
    assert set(info) <= set(properties)
    document = json.loads((await bridge.get("/openapi.json")).body)
    assert document == json.loads(json.dumps(openapi_document()))


# ---- health, metrics, logs --------------------------------------------------------------
async def test_health_metrics_and_one_log_line_per_request(clip_server, caplog):
    async with running_bridge(clip_server.target) as fresh:
        assert json.loads((await fresh.get("/healthz")).body) == {"status": "ok"}
        assert (await fresh.get("/readyz")).code == 200
        with caplog.at_level(logging.INFO, logger="rest_bridge.access"):
            for _ in range(2):
                await fresh.post_form({"text-1": "a"}, {"image-1": RED, "image-2": BLUE},
                                      headers={"request_id": "5"})
            await fresh.post_form({"oops": "a"})
        text = (await fresh.get("/metrics")).body.decode()

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }
    clip = ("route", "/syte_test/clip")
    assert samples["rest_bridge_requests_total", (("method", "POST"), clip, ("status", "200"))] == 2
    assert samples["rest_bridge_requests_total", (("method", "POST"), clip, ("status", "400"))] == 1
    assert samples["rest_bridge_items_embedded_total", (("kind", "image"),)] == 4
    assert samples["rest_bridge_items_embedded_total", (("kind", "text"),)] == 2
    assert samples["rest_bridge_request_duration_seconds_count", (clip,)] == 3
    assert samples["rest_bridge_requests_in_flight", (clip,)] == 0

    lines = [vars(r) for r in caplog.records if r.name == "rest_bridge.access"]
    clip_lines = [line for line in lines if line["route"] == "/syte_test/clip"]
    assert len(clip_lines) == 3
    ok, bad = clip_lines[0], clip_lines[2]
    assert (ok["request_id"], ok["status"], ok["images"], ok["texts"]) == ("5", 200, 2, 1)
    assert ok["latency_ms"] > 0
    assert (bad["status"], bad["error_code"], bad["error_field"]) == (400, "INVALID_ARGUMENT",
                                                                      "oops")


class _HangingCall:
    """A gRPC call that never answers until cancelled."""

    def __init__(self):
        self.future = asyncio.get_running_loop().create_future()
        self.cancelled = False

    def __await__(self):
        return self.future.__await__()

    def cancel(self):
        self.cancelled = True
        self.future.cancel()


class _HangingStub:
    def __init__(self):
        self.calls: list[_HangingCall] = []

    def Embed(self, request, **kwargs):
        self.calls.append(_HangingCall())
        return self.calls[-1]


async def test_a_client_that_goes_away_cancels_its_grpc_call(caplog):
    stub = _HangingStub()
    backend = ClipBackend(target="slow:1", clip=stub, health=None)
    async with running_bridge("slow:1", backend=backend) as slow:
        with caplog.at_level(logging.INFO, logger="rest_bridge"):
            content_type, body = encode_form({"text-1": "a"})
            port = int(slow.base_url.rsplit(":", 1)[1])
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"POST /syte_test/clip HTTP/1.1\r\nHost: x\r\nrequest_id: 9\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
                .encode() + body)
            await writer.drain()
            await until(lambda: stub.calls)  # the gRPC call is out, waiting for its answer
            writer.close()  # the client gives up and hangs up
            await writer.wait_closed()
            await until(lambda: stub.calls[0].cancelled)

            async def metrics_after_the_answer() -> str:
                text = (await slow.get("/metrics")).body.decode()
                return text if 'route="/syte_test/clip",status="499"' in text else ""

            metrics = await until(metrics_after_the_answer)
    assert stub.calls[0].cancelled
    assert 'rest_bridge_requests_in_flight{route="/syte_test/clip"} 0.0' in metrics
    assert 'route="/syte_test/clip",status="499"} 1.0' in metrics  # nginx's "client closed"
    assert "Traceback" not in caplog.text
