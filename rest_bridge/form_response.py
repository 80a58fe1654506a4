"""gRPC EmbedResponse -> seed 002's JSON answer for the multipart endpoint."""

from __future__ import annotations

from clip_grpc.scores import clip_score
from clip_grpc.v1 import clip_pb2
from rest_bridge.multipart import IMAGE, TEXT, FormItem
from rest_bridge.status_map import ApiError, from_item_error
from rest_bridge.vectors import cosine, to_array


def image_vector_key(form_id: str) -> str:
    return f"image_{form_id}_vector"


def text_vector_key(form_id: str) -> str:
    return f"text_{form_id}_vector"


def score_key(form_id: str) -> str:
    return f"image_vector_{form_id}_similarity_score"


def cosine_key(form_id: str) -> str:
    return f"image_vector_{form_id}_cosine"


def _unexpected(message: str) -> ApiError:
    return ApiError(500, "INTERNAL", f"unexpected answer from the embedding server: {message}")


def build_form_response(items: list[FormItem], response: clip_pb2.EmbedResponse) -> dict:
    """One vector per field, and a score and a cosine for every id with both an image and a
    text. The first item the server refused (in request order) fails the whole request,
    naming its form field."""
    if len(response.results) != len(items):
        raise _unexpected(f"{len(response.results)} results for {len(items)} items")
    vectors = {}
    for item, result in zip(items, response.results, strict=True):
        if result.id != item.field:
            raise _unexpected(f"result id {result.id!r} where {item.field!r} was expected")
        outcome = result.WhichOneof("outcome")
        if outcome == "error":
            error = result.error
            raise from_item_error(error.code, f"{item.field}: {error.message}", item.field)
        if outcome != "embedding":
            raise _unexpected(f"no embedding and no error for {item.field!r}")
        try:
            vectors[item.kind, item.form_id] = to_array(result.embedding)
        except ValueError as error:
            raise _unexpected(str(error)) from error

    answer: dict = {}
    for form_id in dict.fromkeys(item.form_id for item in items):
        image, text = vectors.get((IMAGE, form_id)), vectors.get((TEXT, form_id))
        if image is not None:
            answer[image_vector_key(form_id)] = image  # float32 arrays: see vectors.dump_json
        if text is not None:
            answer[text_vector_key(form_id)] = text
        if image is not None and text is not None:
            cos = cosine(image, text)
            answer[score_key(form_id)] = clip_score(cos)
            answer[cosine_key(form_id)] = cos
    return answer
