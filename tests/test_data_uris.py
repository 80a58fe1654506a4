"""data: URIs wherever our JSON carries an image (/v1/embed, /v1/rank), and the reader itself."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from clip_grpc.data_uri import DataUriError, decode_data_uri
from tests.conftest import image_bytes
from tests.rest_helpers import error_of, running_bridge

RED = image_bytes((220, 20, 20))


@pytest.mark.parametrize(("uri", "data"), [
    ("data:image/png;base64,aGVsbG8=", b"hello"),
    ("DATA:image/png;BASE64,aGVs%0AbG8", b"hello"),  # case, wrapped lines, no padding
    ("data:;base64,-_8=", b"\xfb\xff"),  # URL-safe alphabet
    ("data:,hi%20there", b"hi there"),  # percent-encoded, not base64
])
def test_decode(uri, data):
    assert decode_data_uri(uri) == data


@pytest.mark.parametrize(("uri", "words"), [
    ("https://example.com/a.png", "does not fetch URLs"),
    ("file:///etc/passwd", "not a data: URI"),
    ("a.png", "not a data: URI"),
    ("data:image/png;base64", "no ','"),
    ("data:image/png;base64,@@@@", "base64"),
])
def test_refused(uri, words):
    with pytest.raises(DataUriError, match=words):
        decode_data_uri(uri)


def vectors(response) -> list[np.ndarray]:
    assert response.code == 200, response.body
    return [np.asarray(r["embedding"]["values"], np.float32)
            for r in json.loads(response.body)["results"]]


async def test_v1_embed_takes_data_uris_and_base64_alike(bridge):
    uri = f"data:image/png;base64,{base64.b64encode(RED).decode()}"
    by_uri, by_base64 = vectors(await bridge.post_json("/v1/embed", {"items": [
        {"id": "u", "image": uri}, {"id": "b", "image": base64.b64encode(RED).decode()}]}))
    np.testing.assert_allclose(by_uri, by_base64, atol=1e-5)


async def test_v1_rank_takes_data_uris(bridge):
    uri = f"data:image/png;base64,{base64.b64encode(RED).decode()}"
    response = await bridge.post_json("/v1/rank", {
        "query": {"id": "q", "image": uri},
        "candidates": [{"id": "a", "text": "red"}, {"id": "b", "image": uri}]})
    assert response.code == 200, response.body
    best = json.loads(response.body)["candidates"][0]
    assert best["id"] == "b" and best["cosine"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(("image", "field", "words"), [
    ("data:image/png;base64,@@", "items[1].image", "base64"),
    ("https://example.com/a.png", "items[1].image", "does not fetch URLs"),
])
async def test_bad_uris_are_a_400_naming_the_item(bridge, image, field, words):
    response = await bridge.post_json("/v1/embed", {"items": [
        {"id": "ok", "text": "fine"}, {"id": "bad", "image": image}]})
    error = error_of(response)
    assert (response.code, error["field"]) == (400, field)
    assert words in error["message"]


async def test_the_server_limits_apply_to_data_uris(clip_server):
    async with running_bridge(clip_server.target, max_body_bytes=1000) as small:
        big = f"data:image/png;base64,{base64.b64encode(bytes(2000)).decode()}"
        response = await small.post_json("/v1/embed", {"items": [{"image": big}]})
        assert response.code == 413
