"""clip-as-service's HTTP client on the bridge: the recorded requests replayed, and the answers
checked the way the client reads them (strict top level, docs matched by id)."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format

from clip_grpc.jina_v1 import jina_pb2
from clip_grpc.v1 import clip_pb2
from tests.rest_helpers import grpc_vectors

FIXTURES = Path(__file__).parent / "compat" / "fixtures"
TOP_LEVEL = {"header", "parameters", "routes", "data"}


def recorded(folder: str, name: str) -> dict:
    return json.loads((FIXTURES / folder / name).read_text())["json"]


def to_item(doc: dict) -> clip_pb2.Item:
    if doc.get("text"):
        return clip_pb2.Item(text=doc["text"])
    return clip_pb2.Item(image=base64.b64decode(doc["blob"]))


async def raw_vectors(stub, docs) -> np.ndarray:
    return await grpc_vectors(stub, [to_item(d) for d in docs], raw=True)


def milliseconds(stamp: str) -> int:
    moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    return round(moment.timestamp() * 1000)


def strict_answer(response, request: dict) -> dict:
    """What the client accepts: JSON, only the four top-level keys, its own request id, status
    SUCCESS, and at least two routes that each last at least one millisecond."""
    assert response.code == 200, response.body
    assert response.headers["Content-Type"] == "application/json"
    answer = json.loads(response.body)
    assert set(answer) <= TOP_LEVEL
    # As the client does: all but `data` into jina.DataRequestProto, unknown fields refused.
    json_format.ParseDict({k: v for k, v in answer.items() if k != "data"},
                          jina_pb2.DataRequestProto())
    assert answer["header"] == {"request_id": request["header"]["request_id"],
                                "status": {"code": 0}}
    assert answer["parameters"] == request["parameters"]
    assert len(answer["routes"]) >= 2
    for route in answer["routes"]:
        assert set(route) == {"executor", "start_time", "end_time"}
        assert milliseconds(route["end_time"]) - milliseconds(route["start_time"]) >= 1
    return answer


async def test_openapi_lists_the_paths_the_client_posts_to(bridge):
    document = json.loads((await bridge.get("/openapi.json")).body)
    for path in ("/post", "/encode", "/rank", "/default"):
        assert "post" in document["paths"][path]


@pytest.mark.parametrize(("folder", "name", "path"), [
    ("cas_http_openapi404", "02_POST_post.json", "/post"),
    ("cas_http_openapi_encode", "02_POST_encode.json", "/encode"),
])
async def test_encode_replayed(bridge, stub, folder, name, path):
    request = recorded(folder, name)
    answer = strict_answer(await bridge.post_json(path, request), request)
    sent = request["data"]
    assert [d["id"] for d in answer["data"]] == [d["id"] for d in sent]
    got = np.asarray([d["embedding"] for d in answer["data"]], np.float32)
    np.testing.assert_allclose(got, await raw_vectors(stub, sent), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("folder", "name", "path"), [
    ("cas_http_openapi404", "04_POST_post.json", "/post"),
    ("cas_http_openapi_encode", "03_POST_rank.json", "/rank"),
])
async def test_rank_replayed(bridge, stub, folder, name, path):
    request = recorded(folder, name)
    answer = strict_answer(await bridge.post_json(path, request), request)
    assert [d["id"] for d in answer["data"]] == [d["id"] for d in request["data"]]
    for query, ranked in zip(request["data"], answer["data"], strict=True):
        sent = {m["id"]: m for m in query["matches"]}
        matches = ranked["matches"]
        assert sorted(m["id"] for m in matches) == sorted(sent)
        softmax = [m["scores"]["clip_score"]["value"] for m in matches]
        assert softmax == sorted(softmax, reverse=True)
        assert sum(softmax) == pytest.approx(1.0, abs=1e-5)
        assert {m["scores"]["clip_score"]["op_name"] for m in matches} == {"softmax"}
        assert {m["scores"]["clip_score_cosine"]["op_name"] for m in matches} == {"cosine"}
        vectors = await raw_vectors(stub, [query, *(sent[m["id"]] for m in matches)])
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        cosines = [m["scores"]["clip_score_cosine"]["value"] for m in matches]
        np.testing.assert_allclose(cosines, unit[1:] @ unit[0], atol=1e-5)
        for match in matches:  # what the user reads back, and no blobs
            for key in ("text", "uri"):
                assert match.get(key) == sent[match["id"]][key]
            assert "blob" not in match


@pytest.mark.parametrize(("folder", "name", "path"), [
    ("cas_http_openapi404", "06_POST_post.json", "/post"),
    ("cas_http_openapi_encode", "04_POST_default.json", "/default"),
])
async def test_profile_replayed(bridge, folder, name, path):
    request = recorded(folder, name)
    answer = strict_answer(await bridge.post_json(path, request), request)
    assert answer["data"] == [{"id": request["data"][0]["id"]}]


def jina_body(docs: list[dict], endpoint: str = "/encode") -> dict:
    return {"header": {"request_id": "r1", "exec_endpoint": endpoint},
            "parameters": {}, "data": docs}


async def test_blob_wins_over_uri_and_a_data_uri_alone_is_read(bridge, stub):
    red = base64.b64decode(recorded("cas_http_openapi404", "02_POST_post.json")["data"][3]["blob"])
    data_uri = "data:image/png;base64," + base64.b64encode(red).decode()
    body = jina_body([{"id": "a", "blob": base64.b64encode(red).decode(), "uri": "/no/such.png"},
                      {"id": "b", "uri": data_uri}])
    answer = json.loads((await bridge.post_json("/post", body)).body)
    a, b = (np.asarray(d["embedding"], np.float32) for d in answer["data"])
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(("docs", "endpoint", "words"), [
    ([{"id": "x", "uri": "https://example.com/a.jpg"}], "/encode", "does not fetch URLs"),
    ([{"id": "x", "uri": "cat.jpg"}], "/encode", "not a data: URI"),
    ([{"id": "x", "text": "moon " * 100}], "/encode", "'x'"),
    ([{"id": "x"}], "/encode", "no text, blob or data: uri"),
    ([{"id": "x", "tensor": [[1, 2]]}], "/encode", "tensor"),
    ([{"id": "x", "text": "a"}], "/rank", "no matches"),
    ([{"id": "x", "text": "a"}], "/index", "unknown endpoint"),
])
async def test_errors_name_the_doc_in_jinas_shape(bridge, docs, endpoint, words):
    response = await bridge.post_json("/post", jina_body(docs, endpoint))
    assert response.code == 400
    answer = json.loads(response.body)
    assert set(answer) == {"header"} and answer["header"]["request_id"] == "r1"
    status = answer["header"]["status"]
    assert status["code"] == 1 and words in status["description"]


async def test_clip_api_bodies_still_reach_clip_api_on_the_shared_paths(bridge):
    response = await bridge.post_json("/encode", [{"text": "a red circle"}])
    assert response.code == 200 and len(json.loads(response.body)) == 1
