"""CLIP-API-service's POST /encode and POST /rank on the bridge, replaying seed 003's examples."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from clip_grpc.v1 import clip_pb2
from tests.conftest import image_bytes
from tests.model_factory import REPO
from tests.rest_helpers import error_of, grpc_vectors

SHARED = next((p / "shared" for p in REPO.parents if (p / "shared" / "compat").is_dir()), None)
# The fixtures are copied into the repository so that a fresh clone has them.
LOCAL_FIXTURES = Path(__file__).parent / "compat" / "fixtures" / "clip_api_service"
RED = image_bytes((220, 20, 20))
FORM = {"Content-Type": "application/x-www-form-urlencoded"}  # what a bare `curl -d` sends


def fixture(name: str):
    return json.loads((LOCAL_FIXTURES / name).read_text())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_the_local_fixtures_are_the_shared_ones():
    if SHARED is None:
        pytest.skip("../shared/compat is not next to this checkout")
    for path in (SHARED / "compat" / "fixtures" / "clip_api_service").iterdir():
        assert (LOCAL_FIXTURES / path.name).read_bytes() == path.read_bytes()


async def test_seed_003_encode_with_any_content_type(bridge, stub):
    request = fixture("encode_request.json")
    response = await bridge.fetch("/encode", method="POST", body=json.dumps(request), headers=FORM)
    assert response.code == 200, response.body
    vectors = np.asarray(json.loads(response.body), np.float32)
    expected = await grpc_vectors(stub, [
        clip_pb2.Item(image=base64.b64decode(request[0]["img_blob"])),
        clip_pb2.Item(text=request[1]["text"]),
        clip_pb2.Item(image=base64.b64decode(request[2]["img_blob"]))], raw=True)
    # Raw features like the original: not normalised.
    np.testing.assert_allclose(vectors, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0)


async def test_seed_003_rank(bridge, stub):
    request = fixture("rank_request.json")
    response = await bridge.fetch("/rank", method="POST", body=json.dumps(request), headers=FORM)
    assert response.code == 200, response.body
    answer = json.loads(response.body)
    readme = fixture("rank_response_seed003_readme.json")
    assert set(answer) == set(readme)
    for key in answer:
        assert np.asarray(answer[key]).shape == np.asarray(readme[key]).shape == (1, 6)
    # Cosines in candidate order, and a softmax per query with the model's logit scale.
    vectors = await grpc_vectors(stub, [
        clip_pb2.Item(image=base64.b64decode(request["queries"][0]["img_blob"])),
        *(clip_pb2.Item(text=c["text"]) for c in request["candidates"])], raw=True)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = unit[1:] @ unit[0]
    np.testing.assert_allclose(answer["cosine_similarities"][0], cosines, atol=1e-5)
    scale = (await stub.Info(clip_pb2.InfoRequest())).logit_scale
    logits = scale * np.asarray(answer["cosine_similarities"][0], np.float64)
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(answer["probabilities"][0], softmax, rtol=1e-4, atol=1e-7)


async def test_several_queries_data_uris_extra_keys_and_precedence(bridge, stub):
    blue = image_bytes((20, 20, 220))
    response = await bridge.post_json("/rank", {
        "queries": [{"text": "red", "colour": "ignored"},
                    {"img_uri": f"data:image/png;base64,{b64(RED)}", "text": "not used"}],
        "candidates": [{"img_blob": b64(blue), "text": "not used"}, {"text": "a red thing"}]})
    assert response.code == 200, response.body
    answer = json.loads(response.body)
    assert np.asarray(answer["probabilities"]).shape == (2, 2)
    np.testing.assert_allclose(np.sum(answer["probabilities"], axis=1), 1.0, rtol=1e-5)
    # img_uri wins over text, img_blob over text: the second query is the red image.
    vectors = await grpc_vectors(stub, [clip_pb2.Item(image=RED), clip_pb2.Item(image=blue),
                                        clip_pb2.Item(text="a red thing")], raw=True)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(answer["cosine_similarities"][1], unit[1:] @ unit[0], atol=1e-5)


async def test_an_empty_list_encodes_to_an_empty_list(bridge):
    response = await bridge.post_json("/encode", [])
    assert (response.code, json.loads(response.body)) == (200, [])


@pytest.mark.parametrize(("path", "payload", "field", "words"), [
    ("/encode", [{"text": "ok"}, {"img_uri": "https://example.com/dog.jpg"}], "[1].img_uri",
     "does not fetch URLs"),
    ("/encode", [{"img_uri": "/etc/passwd"}], "[0].img_uri", "not a data: URI"),
    ("/encode", [{"img_blob": "%%%"}], "[0].img_blob", "base64"),
    ("/encode", [{"text": "ok"}, {"img_blob": b64(b"not an image")}], "[1].img_blob", "image"),
    ("/encode", [{"text": "ok"}, {}], "[1]", "none of"),
    ("/encode", [{"text": 5}], "[0].text", "string"),
    ("/encode", ["just a string"], "[0]", "object"),
    ("/encode", [{"text": "moon " * 100}], "[0].text", "token"),
    ("/encode", {"text": "not a list"}, None, "list"),
    ("/rank", {"queries": [{"text": "q"}]}, "candidates", "non-empty"),
    ("/rank", {"queries": [{"text": "q"}], "candidates": [{"text": "a"}, {"img_blob": b64(b"x")}]},
     "candidates[1].img_blob", "candidates[1]"),
    ("/rank", {"queries": [{"text": "q"}, {"img_blob": b64(b"x")}], "candidates": [{"text": "a"}]},
     "queries[1].img_blob", "queries[1]"),
    ("/rank", [{"text": "q"}], None, "queries"),
])
async def test_every_bad_input_is_a_400_naming_the_item(bridge, path, payload, field, words):
    response = await bridge.post_json(path, payload)
    error = error_of(response)
    assert (response.code, error["code"], error["field"]) == (400, "INVALID_ARGUMENT", field)
    assert words in error["message"]


async def test_invalid_json_and_get(bridge):
    response = await bridge.fetch("/encode", method="POST", body=b"[{", headers=FORM)
    assert response.code == 400 and "JSON" in error_of(response)["message"]
    for path in ("/encode", "/rank"):
        assert (await bridge.get(path)).code == 405
