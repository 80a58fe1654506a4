"""OpenAI-compatible /v1/embeddings and /v1/models, with the official openai SDK as the client."""

from __future__ import annotations

import base64
import json

import numpy as np
import openai
import pytest

from clip_grpc.v1 import clip_pb2
from tests.conftest import image_bytes
from tests.rest_helpers import grpc_vectors, running_bridge

RED = image_bytes((220, 20, 20))
BLUE = image_bytes((20, 20, 220), fmt="JPEG")
TEXTS = ["a photo of a red circle", "a blue square"]


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


@pytest.fixture(scope="module")
async def info(stub):
    return await stub.Info(clip_pb2.InfoRequest())


@pytest.fixture
async def sdk(bridge):
    client = openai.AsyncOpenAI(base_url=bridge.url("/v1"), api_key="unused", max_retries=0,
                                timeout=30)
    yield client
    await client.close()


async def test_texts_as_floats(sdk, stub, info):
    answer = await sdk.embeddings.create(model="text-embedding-3-small", input=TEXTS,
                                         encoding_format="float")
    assert answer.object == "list" and answer.model == info.model_name
    assert [d.index for d in answer.data] == [0, 1]
    assert all(d.object == "embedding" for d in answer.data)
    got = np.array([d.embedding for d in answer.data], dtype=np.float32)
    expected = await grpc_vectors(stub, [clip_pb2.Item(text=t) for t in TEXTS])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == 0


async def test_one_string_and_the_sdks_default_base64(sdk, stub):
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    answer = await sdk.embeddings.create(model="any-name", input=TEXTS[0])
    expected = await grpc_vectors(stub, [clip_pb2.Item(text=TEXTS[0])])
    assert len(answer.data) == 1
    np.testing.assert_allclose(np.asarray(answer.data[0].embedding, np.float32), expected[0],
                               atol=1e-5)


async def test_base64_is_little_endian_float32_in_the_exact_shape(bridge, stub):
    response = await bridge.post_json("/v1/embeddings", {
        "model": "m", "input": TEXTS, "encoding_format": "base64", "user": "someone"})
    assert response.code == 200
    answer = json.loads(response.body)
    assert set(answer) == {"object", "data", "model", "usage"}
    assert set(answer["usage"]) == {"prompt_tokens", "total_tokens"}
    assert all(set(d) == {"object", "index", "embedding"} for d in answer["data"])
    got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in answer["data"]])
    expected = await grpc_vectors(stub, [clip_pb2.Item(text=t) for t in TEXTS])
    # Equal up to float32 rounding between batch shapes (the two calls may batch differently).
    np.testing.assert_allclose(got, expected, atol=1e-5)


async def test_images_as_data_uris(sdk, stub):
    answer = await sdk.embeddings.create(
        model="m", input=[data_uri(RED), data_uri(BLUE, "image/jpeg")], encoding_format="float",
        extra_body={"modality": "image"})
    got = np.array([d.embedding for d in answer.data], dtype=np.float32)
    expected = await grpc_vectors(stub, [clip_pb2.Item(image=RED), clip_pb2.Item(image=BLUE)])
    np.testing.assert_allclose(got, expected, atol=1e-5)


async def test_dimensions_truncate_and_renormalise(sdk, stub):
    answer = await sdk.embeddings.create(model="m", input=TEXTS[1], dimensions=8,
                                         encoding_format="float")
    vector = np.asarray(answer.data[0].embedding, np.float32)
    full = (await grpc_vectors(stub, [clip_pb2.Item(text=TEXTS[1])]))[0]
    assert vector.shape == (8,)
    assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(vector, full[:8] / np.linalg.norm(full[:8]), atol=1e-5)


async def test_models_list_and_retrieve(sdk, info):
    models = await sdk.models.list()
    assert [m.id for m in models.data] == [info.model_name]
    assert (await sdk.models.retrieve(info.model_name)).id == info.model_name
    with pytest.raises(openai.NotFoundError) as raised:
        await sdk.models.retrieve("text-embedding-3-small")
    assert raised.value.body["code"] == "model_not_found"


@pytest.mark.parametrize(("kwargs", "param", "words"), [
    ({"input": ["https://example.com/cat.jpg"], "extra_body": {"modality": "image"}},
     "input[0]", "does not fetch URLs"),
    ({"input": ["cat.jpg"], "extra_body": {"modality": "image"}}, "input[0]", "not a data: URI"),
    ({"input": ["data:image/png;base64,!!"], "extra_body": {"modality": "image"}},
     "input[0]", "base64"),
    ({"input": [data_uri(b"not an image")], "extra_body": {"modality": "image"}},
     "input[0]", "image"),
    ({"input": ["fine", "moon " * 100]}, "input[1]", "truncate"),
    ({"input": [[1, 2, 3]]}, "input", "check_embedding_ctx_length=False"),
    ({"input": []}, "input", "non-empty"),
    ({"input": "x", "dimensions": 100000}, "dimensions", "at most"),
    ({"input": "x", "extra_body": {"modality": "audio"}}, "modality", "text"),
])
async def test_errors_in_openai_shape(sdk, kwargs, param, words):
    with pytest.raises(openai.BadRequestError) as raised:
        await sdk.embeddings.create(model="m", encoding_format="float", **kwargs)
    error = raised.value.body
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert words in error["message"]


async def test_raw_errors_name_the_part_at_fault(bridge):
    for body, param in ((b"{not json", None), (b"[1]", None),
                        (b'{"input": "x", "encoding_format": "int8"}', "encoding_format")):
        response = await bridge.fetch("/v1/embeddings", method="POST", body=body)
        assert response.code == 400
        error = json.loads(response.body)["error"]
        assert error["param"] == param and error["code"] == "invalid_argument"


async def test_server_down_is_a_503_in_openai_shape():
    async with running_bridge("127.0.0.1:1") as down:
        client = openai.AsyncOpenAI(base_url=down.url("/v1"), api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as raised:
            await client.embeddings.create(model="m", input="hello")
        await client.close()
    assert raised.value.status_code == 503
    assert raised.value.body["type"] == "server_error"
