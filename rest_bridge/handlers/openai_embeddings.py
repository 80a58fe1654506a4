"""OpenAI-compatible embeddings: POST /v1/embeddings, GET /v1/models[/<id>].

The shapes of OpenAI's API (which TEI, infinity and vLLM speak too), translated to one Embed
call. Texts by default; images as `data:` URIs with `"modality": "image"` (infinity's
convention). Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import base64

import numpy as np
import orjson

from clip_grpc.data_uri import DataUriError, decode_data_uri, is_data_uri, not_a_data_uri
from clip_grpc.v1 import clip_pb2
from rest_bridge.handlers.base import BaseHandler, BodyHandler
from rest_bridge.status_map import ApiError, from_item_error, invalid_argument
from rest_bridge.vectors import to_array

# OpenAI's own bound on inputs per request.
MAX_INPUTS = 2048
ENCODING_FORMATS = ("float", "base64")
MODALITIES = ("text", "image")
TOKEN_ARRAYS_REFUSED = (
    "input: token arrays are not supported (their ids belong to another tokenizer); send "
    "strings. LangChain's OpenAIEmbeddings sends token arrays unless built with "
    "check_embedding_ctx_length=False"
)


def openai_error_body(error: ApiError) -> dict:
    if error.status_code >= 500:
        kind = "server_error"
    elif error.status_code == 401:
        kind = "authentication_error"
    elif error.status_code == 403:
        kind = "permission_error"
    elif error.status_code == 429:
        kind = "rate_limit_error"
    else:
        kind = "invalid_request_error"
    return {"error": {"message": error.message, "type": kind, "param": error.field,
                      "code": error.code.lower()}}


class OpenAIHandler(BaseHandler):
    def error_body(self, error: ApiError) -> dict:
        return openai_error_body(error)

    async def served_model(self) -> clip_pb2.InfoResponse:
        return await self.call_grpc(self.backend.clip.Info, clip_pb2.InfoRequest())


def model_object(info: clip_pb2.InfoResponse) -> dict:
    # created: OpenAI's Unix time of the model's release; unknown here.
    return {"id": info.model_name, "object": "model", "created": 0, "owned_by": "clip-grpc"}


class ModelsHandler(OpenAIHandler):
    route = "/v1/models"

    async def get(self) -> None:
        self.write_json({"object": "list", "data": [model_object(await self.served_model())]})


class ModelHandler(OpenAIHandler):
    route = r"/v1/models/(.+)"

    async def get(self, model_id: str) -> None:
        info = await self.served_model()
        if model_id != info.model_name:
            raise ApiError(404, "model_not_found",
                           f"the model {model_id!r} does not exist; this server serves "
                           f"{info.model_name!r}", "model")
        self.write_json(model_object(info))


def _texts(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise invalid_argument("input must be a string or a non-empty array of strings", "input")
    if len(value) > MAX_INPUTS:
        raise invalid_argument(f"input has {len(value)} items; at most {MAX_INPUTS}", "input")
    for index, entry in enumerate(value):
        if isinstance(entry, int | list):
            raise invalid_argument(TOKEN_ARRAYS_REFUSED, "input")
        if not isinstance(entry, str):
            raise invalid_argument(f"input[{index}] must be a string", f"input[{index}]")
    return value


def parse_embeddings_request(body: bytes) -> tuple[list[clip_pb2.Item], str, int | None]:
    """(items, encoding_format, dimensions) of an OpenAI embeddings request."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise invalid_argument(f"the body is not valid JSON: {error}") from None
    if not isinstance(request, dict):
        raise invalid_argument("the body must be a JSON object")
    if "input" not in request:
        raise invalid_argument("input is required", "input")
    encoding_format = request.get("encoding_format") or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise invalid_argument("encoding_format must be 'float' or 'base64'", "encoding_format")
    dimensions = request.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        raise invalid_argument("dimensions must be a positive integer", "dimensions")
    modality = request.get("modality") or "text"
    if modality not in MODALITIES:
        raise invalid_argument("modality must be 'text' or 'image'", "modality")
    texts = _texts(request["input"])
    if modality == "text":
        return [clip_pb2.Item(id=str(i), text=t) for i, t in enumerate(texts)], \
            encoding_format, dimensions
    items = []
    for index, uri in enumerate(texts):
        field = f"input[{index}]"
        if not is_data_uri(uri):
            raise invalid_argument(f"{field}: {not_a_data_uri(uri)}", field)
        try:
            items.append(clip_pb2.Item(id=str(index), image=decode_data_uri(uri)))
        except DataUriError as error:
            raise invalid_argument(f"{field}: {error}", field) from None
    return items, encoding_format, dimensions


def shorten(vector: np.ndarray, dimensions: int | None) -> np.ndarray:
    """The first `dimensions` values, L2-normalised again (OpenAI's `dimensions`). CLIP was not
    trained for this (no Matryoshka loss): shortened vectors keep less of their meaning."""
    if dimensions is None or dimensions == vector.shape[0]:
        return vector
    head = vector[:dimensions].astype(np.float32)
    norm = float(np.linalg.norm(head))
    return head / norm if norm > 0 else head


class EmbeddingsHandler(BodyHandler, OpenAIHandler):
    route = "/v1/embeddings"

    async def handle(self, body: bytes) -> None:
        items, encoding_format, dimensions = parse_embeddings_request(body)
        info = await self.served_model()
        if dimensions is not None and dimensions > info.embedding_dim:
            raise invalid_argument(
                f"dimensions must be at most {info.embedding_dim}, the model's dimension",
                "dimensions")
        response = await self.call_grpc(self.backend.clip.Embed, clip_pb2.EmbedRequest(items=items))
        data = []
        for index, result in enumerate(response.results):
            if result.HasField("error"):
                error = result.error
                raise from_item_error(error.code, f"input[{index}]: {error.message}",
                                      f"input[{index}]")
            vector = shorten(to_array(result.embedding), dimensions)
            if encoding_format == "base64":
                embedding = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            else:
                embedding = vector
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        if items[0].HasField("image"):
            self.images = len(items)
        else:
            self.texts = len(items)
        # The bridge does not tokenise, so it cannot count tokens: usage says 0.
        self.write_json({"object": "list", "data": data, "model": info.model_name,
                         "usage": {"prompt_tokens": 0, "total_tokens": 0}})
