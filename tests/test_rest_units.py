"""REST bridge pieces that need no server: status table, form parsing, vectors, config."""

from __future__ import annotations

import json
import math

import grpc
import numpy as np
import pytest

from clip_grpc.scores import clip_score
from clip_grpc.v1 import clip_pb2
from rest_bridge.config import BridgeConfig, parse_config
from rest_bridge.form_response import build_form_response
from rest_bridge.multipart import build_embed_request, parse_form
from rest_bridge.openapi import openapi_document
from rest_bridge.status_map import (
    ApiError,
    from_grpc_code,
    from_item_error,
    from_rpc_error,
    http_status_for,
)
from rest_bridge.vectors import cosine, dump_json, to_array
from tests.rest_helpers import encode_form

PNG = b"\x89PNG\r\n\x1a\n not really"


# ---- status table ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.DATA_LOSS, 500),
    ],
)
def test_grpc_codes_map_to_http_statuses(code, status):
    assert http_status_for(code) == status
    assert from_grpc_code(code, "details").status_code == status


def test_unexpected_server_failures_hide_their_details():
    error = from_grpc_code(grpc.StatusCode.INTERNAL, "Traceback: secret at line 3")
    assert error.body()["error"]["code"] == "INTERNAL"
    assert "secret" not in error.message


class _FakeRpcError(grpc.aio.AioRpcError):
    def __init__(self, code, details):
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def test_an_unavailable_server_is_a_503_without_its_address():
    details = "failed to connect to all addresses; last error: ipv4:10.0.0.7:50051: refused"
    error = from_rpc_error(_FakeRpcError(grpc.StatusCode.UNAVAILABLE, details))
    assert (error.status_code, error.code) == (503, "UNAVAILABLE")
    assert "10.0.0.7" not in error.message and "50051" not in error.message
    assert "retry" in error.message


@pytest.mark.parametrize(
    ("number", "status", "code"),
    [(3, 400, "INVALID_ARGUMENT"), (8, 429, "RESOURCE_EXHAUSTED"), (13, 500, "INTERNAL"),
     (0, 500, "INTERNAL"), (999, 500, "INTERNAL")],
)
def test_item_errors_map_through_the_same_table(number, status, code):
    error = from_item_error(number, "image-3: cannot decode", "image-3")
    assert (error.status_code, error.code, error.field) == (status, code, "image-3")


# ---- form parsing ----------------------------------------------------------------------
def test_the_spec_form_becomes_one_request():
    content_type, body = encode_form({"text-1": "Man staring at the moon"}, {"image-1": PNG})
    items = parse_form(content_type, body, max_fields=10)
    assert [(i.field, i.kind, i.form_id) for i in items] == [
        ("image-1", "image", "1"), ("text-1", "text", "1")]
    request = build_embed_request(items, truncate=True)
    assert [item.id for item in request.items] == ["image-1", "text-1"]
    assert request.items[0].image == PNG
    assert request.items[1].text == "Man staring at the moon"
    assert request.options.truncate
    assert request.options.format == clip_pb2.EMBEDDING_FORMAT_PACKED_FLOAT32


def test_ids_may_use_letters_digits_dots_dashes_underscores():
    content_type, body = encode_form({"text-a.b_c-9": "x"}, {"image-a.b_c-9": PNG})
    assert {i.form_id for i in parse_form(content_type, body, 10)} == {"a.b_c-9"}


def _form_error(content_type, body, max_fields=10) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_form(content_type, body, max_fields)
    return caught.value


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/x-www-form-urlencoded", "text/plain", ""]
)
def test_only_multipart_is_accepted(content_type):
    error = _form_error(content_type, b"text-1=hello")
    assert (error.status_code, error.code) == (415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize(
    ("texts", "files", "field", "words"),
    [
        ({}, {}, None, "no fields"),
        ({"img-1": "x"}, {}, "img-1", "unknown form field"),
        ({"1": "x"}, {}, "1", "unknown form field"),
        ({}, {"text-1": PNG}, "text-1", "file upload"),
        ({"image-1": "x"}, {}, "image-1", "must be a file upload"),
        ({"text-": "x"}, {}, "text-", "bad id"),
        ({"text-a b": "x"}, {}, "text-a b", "bad id"),
        ({"text-é": "x"}, {}, "text-é", "bad id"),
        ({"text-" + "x" * 65: "x"}, {}, "text-" + "x" * 65, "bad id"),
        ({"text-1": b"\xff\xfe"}, {}, "text-1", "UTF-8"),
    ],
)
def test_bad_forms_are_rejected_naming_the_field(texts, files, field, words):
    error = _form_error(*encode_form(texts, files))
    assert (error.status_code, error.code, error.field) == (400, "INVALID_ARGUMENT", field)
    assert words in error.message


def test_a_field_sent_twice_is_rejected():
    content_type, body = encode_form({"text-1": "a"})
    boundary = content_type.split("=")[1]
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="text-1"\r\n\r\nb\r\n'
    error = _form_error(content_type, part.encode() + body)
    assert error.field == "text-1" and "2 times" in error.message


def test_too_many_fields_and_malformed_bodies_are_400():
    content_type, body = encode_form({f"text-{i}": "x" for i in range(5)})
    assert "more than 4 fields" in _form_error(content_type, body, max_fields=4).message
    assert len(parse_form(content_type, body, max_fields=5)) == 5
    error = _form_error(content_type, body[: len(body) // 2])
    assert error.status_code == 400 and "malformed multipart" in error.message


# ---- vectors and the answer ------------------------------------------------------------
def test_both_wire_formats_read_the_same_vector():
    vector = np.random.default_rng(0).standard_normal(8).astype("<f4")
    packed = clip_pb2.Embedding(dim=8, packed=vector.tobytes())
    listed = clip_pb2.Embedding(dim=8, values=vector.tolist())
    np.testing.assert_array_equal(to_array(packed), vector)
    np.testing.assert_array_equal(to_array(listed), vector)
    with pytest.raises(ValueError):
        to_array(clip_pb2.Embedding(dim=9, packed=vector.tobytes()))


def test_json_floats_read_back_as_the_same_float32():
    vector = np.random.default_rng(1).standard_normal(512).astype(np.float32)
    text = dump_json({"v": vector, "score": 3}).decode()
    assert np.array_equal(np.asarray(json.loads(text)["v"], dtype=np.float32), vector)
    assert len(text) < 512 * 13  # shortest float32 decimals, not float64 ones


@pytest.mark.parametrize(
    ("cos", "score"),
    [(-0.7, 0), (0.0, 0), (0.004, 0), (0.2514, 25), (0.853, 85), (1.0, 100), (1.0000002, 100),
     (math.nan, 0)],
)
def test_similarity_score_is_round_100_max_cosine_0(cos, score):
    assert clip_score(cos) == score


def test_cosine_of_unnormalised_vectors():
    assert cosine(np.array([2.0, 0.0]), np.array([3.0, 3.0])) == pytest.approx(math.sqrt(0.5))
    assert cosine(np.zeros(2), np.ones(2)) == 0.0


def _embedding(values) -> clip_pb2.Embedding:
    vector = np.asarray(values, dtype="<f4")
    return clip_pb2.Embedding(dim=vector.size, packed=vector.tobytes())


def test_answer_has_vectors_score_and_cosine_per_id():
    content_type, body = encode_form({"text-1": "a", "text-2": "b"}, {"image-1": PNG})
    items = parse_form(content_type, body, 10)
    response = clip_pb2.EmbedResponse(results=[
        clip_pb2.EmbedResult(id="image-1", embedding=_embedding([0.6, 0.8])),
        clip_pb2.EmbedResult(id="text-1", embedding=_embedding([1.0, 0.0])),
        clip_pb2.EmbedResult(id="text-2", embedding=_embedding([0.0, 1.0])),
    ])
    answer = build_form_response(items, response)
    assert list(answer) == ["image_1_vector", "text_1_vector", "image_vector_1_similarity_score",
                            "image_vector_1_cosine", "text_2_vector"]
    assert answer["image_vector_1_cosine"] == pytest.approx(0.6)
    assert answer["image_vector_1_similarity_score"] == 60
    assert answer["text_2_vector"].tolist() == [0.0, 1.0]


def test_the_first_refused_item_fails_the_request_naming_its_field():
    content_type, body = encode_form({"text-1": "a"}, {"image-3": PNG})
    items = parse_form(content_type, body, 10)
    response = clip_pb2.EmbedResponse(results=[
        clip_pb2.EmbedResult(id="image-3", error=clip_pb2.ItemError(
            code=3, message="cannot decode the image", field="image")),
        clip_pb2.EmbedResult(id="text-1", embedding=_embedding([1.0])),
    ])
    with pytest.raises(ApiError) as caught:
        build_form_response(items, response)
    assert (caught.value.status_code, caught.value.field) == (400, "image-3")
    assert "image-3: cannot decode the image" == caught.value.message


def test_a_short_answer_from_the_server_is_a_500():
    content_type, body = encode_form({"text-1": "a"})
    items = parse_form(content_type, body, 10)
    with pytest.raises(ApiError) as caught:
        build_form_response(items, clip_pb2.EmbedResponse())
    assert caught.value.status_code == 500


# ---- config and OpenAPI ------------------------------------------------------------------
def test_flags_win_over_env_which_wins_over_defaults():
    env = {"REST_BRIDGE_PORT": "9000", "REST_BRIDGE_GRPC_TARGET": "env:1",
           "REST_BRIDGE_GRPC_TLS": "true", "REST_BRIDGE_MAX_BODY_BYTES": "1024"}
    config = parse_config(["--grpc-target", "flag:2"], env)
    assert (config.grpc_target, config.port, config.max_body_bytes) == ("flag:2", 9000, 1024)
    assert config.use_tls
    defaults = parse_config([], {})
    assert defaults == BridgeConfig()
    assert (defaults.port, defaults.max_body_bytes) == (8081, 50 * 1024 * 1024)
    assert parse_config(["--grpc-root-cert", "/ca.pem"], {}).use_tls


@pytest.mark.parametrize(
    ("argv", "env"),
    [([], {"REST_BRIDGE_PORT": "http"}), (["--port", "70000"], {}),
     ([], {"REST_BRIDGE_GRPC_TLS": "maybe"}), (["--max-body-bytes", "0"], {})],
)
def test_bad_settings_stop_the_cli_with_a_message(argv, env, capsys):
    with pytest.raises(SystemExit):
        parse_config(argv, env)
    assert "error" in capsys.readouterr().err


def test_openapi_schemas_follow_the_proto():
    document = openapi_document()
    schemas = document["components"]["schemas"]
    for name in ("EmbedRequest", "EmbedResponse", "RankRequest", "RankResponse", "InfoResponse"):
        fields = clip_pb2.DESCRIPTOR.message_types_by_name[name].fields
        assert set(schemas[name]["properties"]) == {f.json_name for f in fields}
    assert schemas["Item"]["properties"]["image"] == {"type": "string", "format": "byte"}
    assert set(document["paths"]) >= {"/syte_test/clip", "/v1/embed", "/v1/rank", "/v1/info",
                                      "/healthz", "/readyz", "/metrics"}
