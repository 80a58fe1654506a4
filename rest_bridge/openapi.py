"""The OpenAPI 3.1 document of the bridge. The /v1 schemas are derived from the proto
descriptors, so they follow the contract as it changes."""

from __future__ import annotations

import functools

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from clip_grpc.v1 import clip_pb2

_SCALARS = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32"},
    # proto3 JSON writes 64-bit integers as strings (and reads either).
    FieldDescriptor.TYPE_INT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": ["string", "integer"], "format": "uint64"},
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _field_schema(field: FieldDescriptor, schemas: dict) -> dict:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        _add_message(field.message_type, schemas)
        schema = _ref(field.message_type.name)
    elif field.type == FieldDescriptor.TYPE_ENUM:
        _add_enum(field.enum_type, schemas)
        schema = _ref(field.enum_type.name)
    else:
        schema = dict(_SCALARS[field.type])
    if field.is_repeated:
        return {"type": "array", "items": schema}
    return schema


def _add_enum(enum: EnumDescriptor, schemas: dict) -> None:
    schemas[enum.name] = {"type": "string", "enum": [value.name for value in enum.values]}


def _add_message(message: Descriptor, schemas: dict) -> None:
    if message.name in schemas:
        return
    schema: dict = {"type": "object", "additionalProperties": False, "properties": {}}
    schemas[message.name] = schema
    for field in message.fields:
        schema["properties"][field.json_name] = _field_schema(field, schemas)
    oneofs = [o for o in message.oneofs if not o.name.startswith("_")]
    if oneofs:
        schema["description"] = "; ".join(
            f"at most one of {', '.join(f.json_name for f in o.fields)} ({o.name})" for o in oneofs
        )


def _error_schema() -> dict:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "field"],
                "properties": {
                    "code": {"type": "string", "examples": ["INVALID_ARGUMENT"]},
                    "message": {"type": "string"},
                    "field": {"type": ["string", "null"], "examples": ["image-3"]},
                },
            }
        },
    }


def _clip_form_response_schema() -> dict:
    vector = {"type": "array", "items": {"type": "number"}}
    return {
        "type": "object",
        "description": "Keys depend on the form's ids: image_<id>_vector, text_<id>_vector, "
        "and for an id with both image_vector_<id>_similarity_score (0-100) and "
        "image_vector_<id>_cosine.",
        "patternProperties": {
            r"^image_.+_vector$": vector,
            r"^text_.+_vector$": vector,
            r"^image_vector_.+_similarity_score$": {
                "type": "integer", "minimum": 0, "maximum": 100,
            },
            r"^image_vector_.+_cosine$": {"type": "number", "minimum": -1, "maximum": 1},
        },
    }


def _errors(*statuses: int) -> dict:
    return {
        str(status): {
            "description": description,
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for status, description in (
            (400, "invalid request (error.field names the culprit)"),
            (413, "request body over the limit"),
            (415, "wrong Content-Type"),
            (429, "server overloaded; see Retry-After"),
            (500, "unexpected failure"),
            (503, "embedding server unavailable; see Retry-After"),
            (504, "embedding server did not answer in time"),
        )
        if status in statuses
    }


def _json_body(schema: str) -> dict:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


def _json_answer(schema: str | dict, description: str = "OK") -> dict:
    schema = _ref(schema) if isinstance(schema, str) else schema
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_REQUEST_ID = {
    "name": "request_id",
    "in": "header",
    "required": False,
    "description": "An integer echoed in the request_id response header (a UUID when absent).",
    "schema": {"type": "string", "pattern": "^-?[0-9]{1,32}$"},
}


def _openai_paths() -> dict:
    openai_error = {"description": "OpenAI's error shape: {error: {message, type, param, code}}",
                    "content": {"application/json": {"schema": {"type": "object"}}}}
    errors = {str(status): openai_error for status in (400, 413, 429, 500, 503, 504)}
    return {
        "/v1/embeddings": {"post": {
            "summary": "OpenAI-compatible embeddings: {model, input: str | [str], "
            "encoding_format: float | base64, dimensions?, user?, modality?: text | image}; "
            "images as data: URIs with modality image",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["input"]}}}},
            "responses": {"200": _json_answer({"type": "object"}), **errors},
        }},
        "/v1/models": {"get": {
            "summary": "OpenAI-compatible list of the served model",
            "responses": {"200": _json_answer({"type": "object"}), **errors},
        }},
    }


def _peer_paths() -> dict:
    """clip-as-service's client posts to the POST paths listed here (/encode, /rank, /default);
    /encode and /rank also take CLIP-API-service's bodies."""
    jina = ("a jina DataRequest {header, parameters, data} (clip-as-service's "
            "clip_client.Client('http://...'))")
    body = {"required": True, "content": {"application/json": {"schema": {}}}}
    answer = {"200": _json_answer({}), **_errors(400, 413, 429, 500, 503, 504)}
    return {
        "/encode": {"post": {"summary": "CLIP-API-service: a list of {text | img_blob | "
                             f"img_uri (data: only)}} -> a list of raw vectors; or {jina}",
                             "requestBody": body, "responses": answer}},
        "/rank": {"post": {"summary": "CLIP-API-service: {queries, candidates} -> "
                           f"{{probabilities, cosine_similarities}}; or {jina}",
                           "requestBody": body, "responses": answer}},
        "/post": {"post": {"summary": f"clip-as-service: {jina}, endpoint in exec_endpoint",
                           "requestBody": body, "responses": answer}},
        "/default": {"post": {"summary": f"clip-as-service's default endpoint (encode): {jina}",
                              "requestBody": body, "responses": answer}},
    }


@functools.cache
def openapi_document() -> dict:
    schemas: dict = {"Error": _error_schema(), "ClipFormResponse": _clip_form_response_schema()}
    for message in ("EmbedRequest", "EmbedResponse", "RankRequest", "RankResponse",
                    "InfoResponse"):
        _add_message(clip_pb2.DESCRIPTOR.message_types_by_name[message], schemas)
    all_errors = _errors(400, 413, 415, 429, 500, 503, 504)
    paths = {
        "/syte_test/clip": {"post": {
            "summary": "Embed images and texts sent as a multipart form (seed 002)",
            "parameters": [_REQUEST_ID, {
                "name": "truncate", "in": "query", "required": False,
                "description": "cut texts longer than the model's context instead of a 400",
                "schema": {"type": "boolean", "default": False},
            }],
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object",
                "patternProperties": {
                    r"^image-[A-Za-z0-9_.\-]{1,64}$": {"type": "string", "format": "binary"},
                    r"^text-[A-Za-z0-9_.\-]{1,64}$": {"type": "string"},
                },
                "additionalProperties": False,
            }}}},
            "responses": {"200": _json_answer("ClipFormResponse"), **all_errors},
        }},
        "/v1/embed": {"post": {
            "summary": "Embed items (EmbedRequest as proto3 JSON; format defaults to "
            "EMBEDDING_FORMAT_FLOAT_LIST)",
            "parameters": [_REQUEST_ID],
            "requestBody": _json_body("EmbedRequest"),
            "responses": {"200": _json_answer("EmbedResponse"), **all_errors},
        }},
        "/v1/rank": {"post": {
            "summary": "Rank candidates against a query (RankRequest as proto3 JSON)",
            "parameters": [_REQUEST_ID],
            "requestBody": _json_body("RankRequest"),
            "responses": {"200": _json_answer("RankResponse"), **all_errors},
        }},
        "/v1/info": {"get": {
            "summary": "The model and the server's limits",
            "responses": {"200": _json_answer("InfoResponse"), **_errors(500, 503, 504)},
        }},
        "/healthz": {"get": {
            "summary": "The bridge is up",
            "responses": {"200": _json_answer({"type": "object"})},
        }},
        "/readyz": {"get": {
            "summary": "The gRPC server reports SERVING",
            "responses": {"200": _json_answer({"type": "object"}), **_errors(503)},
        }},
        "/metrics": {"get": {
            "summary": "Prometheus metrics",
            "responses": {"200": {"description": "Prometheus text format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }},
    }
    paths.update(_openai_paths())
    paths.update(_peer_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "clip-grpc REST bridge", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas},
    }
