"""clip-as-service's gRPC client on the server's port: jina.JinaRPC/Call, with the recorded
DataRequestProto messages replayed byte for byte."""

from __future__ import annotations

import base64
from pathlib import Path

import grpc
import numpy as np
import pytest

from clip_grpc.jina_v1 import docarray_pb2, jina_pb2, jina_pb2_grpc
from clip_grpc.v1 import clip_pb2, clip_pb2_grpc

FIXTURES = Path(__file__).parent / "compat" / "fixtures" / "cas_grpc"
# What clip-client sends with encode and rank.
METADATA = (("__prefetch__", "100"),)


def recorded(number: str) -> jina_pb2.DataRequestProto:
    raw = (FIXTURES / f"{number}_jina.JinaRPC_Call.pb").read_bytes()
    message = jina_pb2.DataRequestProto.FromString(raw)
    assert message.SerializeToString() == raw  # our trimmed copy loses nothing the client sends
    return message


@pytest.fixture(scope="module")
async def channel(clip_server):
    async with grpc.aio.insecure_channel(clip_server.target) as opened:
        yield opened


async def call(channel, *requests) -> list[jina_pb2.DataRequestProto]:
    async def messages():
        for request in requests:
            yield request
    stub = jina_pb2_grpc.JinaRPCStub(channel)
    return [answer async for answer in stub.Call(messages(), metadata=METADATA, timeout=60)]


def item_of(doc: docarray_pb2.DocumentProto) -> clip_pb2.Item:
    if doc.WhichOneof("content") == "text":
        return clip_pb2.Item(text=doc.text)
    return clip_pb2.Item(image=doc.blob)


async def raw_vectors(channel, docs) -> np.ndarray:
    stub = clip_pb2_grpc.ClipServiceStub(channel)
    response = await stub.Embed(clip_pb2.EmbedRequest(
        items=[item_of(d) for d in docs], options=clip_pb2.EmbedOptions(raw=True)))
    return np.stack([np.frombuffer(r.embedding.packed, "<f4") for r in response.results])


def check_envelope(answer: jina_pb2.DataRequestProto, request: jina_pb2.DataRequestProto):
    assert answer.header.request_id == request.header.request_id
    assert answer.header.status.code == jina_pb2.StatusProto.SUCCESS, answer.header.status
    assert answer.parameters == request.parameters
    assert len(answer.routes) >= 2
    for route in answer.routes:  # profile() divides by the first one's milliseconds
        assert route.end_time.ToMilliseconds() - route.start_time.ToMilliseconds() >= 1


def vector(embedding: docarray_pb2.NdArrayProto) -> np.ndarray:
    assert embedding.cls_name == "numpy"  # docarray 0.21 reads nothing without it
    assert embedding.dense.dtype == "<f4"
    values = np.frombuffer(embedding.dense.buffer, "<f4")
    assert list(embedding.dense.shape) == [values.size]
    return values


async def test_the_three_recorded_calls_on_one_stream(channel):
    encode, rank, profile = recorded("01"), recorded("02"), recorded("03")
    answers = await call(channel, encode, rank, profile)
    assert len(answers) == 3
    for answer, request in zip(answers, (encode, rank, profile), strict=True):
        check_envelope(answer, request)

    docs = encode.data.docs.docs
    assert [d.id for d in answers[0].data.docs.docs] == [d.id for d in docs]
    got = np.stack([vector(d.embedding) for d in answers[0].data.docs.docs])
    np.testing.assert_allclose(got, await raw_vectors(channel, docs), rtol=1e-4, atol=1e-5)

    for query, ranked in zip(rank.data.docs.docs, answers[1].data.docs.docs, strict=True):
        assert ranked.id == query.id
        sent = {m.id: m for m in query.matches}
        assert sorted(m.id for m in ranked.matches) == sorted(sent)
        softmax = [m.scores["clip_score"].value for m in ranked.matches]
        assert softmax == sorted(softmax, reverse=True)
        assert sum(softmax) == pytest.approx(1.0, abs=1e-5)
        vectors = await raw_vectors(channel, [query, *(sent[m.id] for m in ranked.matches)])
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        cosines = [m.scores["clip_score_cosine"].value for m in ranked.matches]
        np.testing.assert_allclose(cosines, unit[1:] @ unit[0], atol=1e-5)
        for match in ranked.matches:
            assert (match.scores["clip_score"].op_name,
                    match.scores["clip_score_cosine"].op_name) == ("softmax", "cosine")
            assert match.uri == sent[match.id].uri
            assert match.WhichOneof("content") in ("text", None)  # no blobs sent back
            if sent[match.id].WhichOneof("content") == "text":
                assert match.text == sent[match.id].text

    assert [d.id for d in answers[2].data.docs.docs] == [profile.data.docs.docs[0].id]


def request_of(*docs, endpoint="/encode") -> jina_pb2.DataRequestProto:
    request = jina_pb2.DataRequestProto()
    request.header.request_id = "r1"
    request.header.exec_endpoint = endpoint
    request.data.docs.docs.extend(docs)
    return request


async def test_blob_wins_over_uri_and_a_data_uri_alone_is_read(channel):
    png = recorded("01").data.docs.docs[3].blob
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    (answer,) = await call(channel, request_of(
        docarray_pb2.DocumentProto(id="a", blob=png, uri="/no/such/file.png"),
        docarray_pb2.DocumentProto(id="b", uri=uri)))
    a, b = (vector(d.embedding) for d in answer.data.docs.docs)
    np.testing.assert_allclose(a, b, atol=1e-5)


async def test_bad_messages_are_refused_by_name_and_the_stream_goes_on(channel):
    pickled = jina_pb2.DataRequestProto()
    pickled.header.request_id = "p"
    pickled.header.exec_endpoint = "/encode"
    pickled.data.docs_bytes = b"\x80\x04 not unpickled"
    bad = [
        pickled,
        request_of(docarray_pb2.DocumentProto(id="u", uri="https://example.com/a.jpg")),
        request_of(docarray_pb2.DocumentProto(id="f", uri="cat.jpg")),
        request_of(docarray_pb2.DocumentProto(id="e")),
        request_of(docarray_pb2.DocumentProto(id="t", text="moon " * 100)),
        request_of(docarray_pb2.DocumentProto(id="q", text="a"), endpoint="/rank"),
        request_of(docarray_pb2.DocumentProto(id="x", text="a"), endpoint="/index"),
    ]
    good = request_of(docarray_pb2.DocumentProto(id="ok", text="a red circle"))
    answers = await call(channel, *bad, good)
    words = ["never unpickles", "does not fetch URLs", "not a data: URI", "no text, blob",
             "'t'", "no matches", "unknown endpoint"]
    for answer, word in zip(answers, words, strict=False):
        assert answer.header.status.code == jina_pb2.StatusProto.ERROR
        assert word in answer.header.status.description
        assert len(answer.routes) == 2
    assert answers[-1].header.status.code == jina_pb2.StatusProto.SUCCESS
    assert vector(answers[-1].data.docs.docs[0].embedding).size > 0
