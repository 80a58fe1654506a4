"""CLIP-API-service's API (BentoML): POST /encode and POST /rank.

`/encode`: a JSON list of items `{text | img_blob (base64) | img_uri (data: only)}` -> a JSON
list of vectors, raw like the original (get_image_features / get_text_features, not normalised).
`/rank`: `{queries: [item], candidates: [item]}` -> `{probabilities: QxC, cosine_similarities:
QxC}`, probabilities a softmax per query with the model's logit scale. As BentoML does, any
Content-Type is accepted and unknown item keys are ignored; unlike it, every bad input is a 400
naming the item (the original answers 500 to most). Both paths are shared with clip-as-service's
HTTP client: `shared_routes` tells the two apart by the body's shape.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re

from clip_grpc.data_uri import DataUriError, decode_data_uri, is_data_uri, not_a_data_uri
from clip_grpc.v1 import clip_pb2
from rest_bridge.handlers.base import BaseHandler
from rest_bridge.status_map import ApiError, from_item_error, invalid_argument
from rest_bridge.vectors import to_array

ITEM_KEYS = "text, img_blob or img_uri"


def to_item(entry, where: str) -> tuple[clip_pb2.Item, str]:
    """One CLIP-API-service item and the field it came from (e.g. `[2].img_blob`); the
    precedence: img_uri, then img_blob, then text."""
    if not isinstance(entry, dict):
        raise invalid_argument(f"{where}: an item must be an object with {ITEM_KEYS}", where)
    for key in ("img_uri", "img_blob", "text"):
        value = entry.get(key)
        if value is None:
            continue
        field = f"{where}.{key}"
        if not isinstance(value, str):
            raise invalid_argument(f"{field}: must be a string", field)
        if key == "text":
            return clip_pb2.Item(id=where, text=value), field
        if key == "img_uri" and not is_data_uri(value):
            raise invalid_argument(f"{field}: {not_a_data_uri(value)}", field)
        try:
            if key == "img_uri":
                data = decode_data_uri(value)
            else:
                data = base64.b64decode("".join(value.split()), validate=True)
        except DataUriError as error:
            raise invalid_argument(f"{field}: {error}", field) from None
        except (binascii.Error, ValueError):
            raise invalid_argument(f"{field}: not valid base64", field) from None
        return clip_pb2.Item(id=where, image=data), field
    raise invalid_argument(f"{where}: the item has none of {ITEM_KEYS}", where)


def count(handler: BaseHandler, items: list[clip_pb2.Item]) -> None:
    images = sum(item.HasField("image") for item in items)
    handler.images += images
    handler.texts += len(items) - images


def item_list(value, name: str) -> tuple[list[clip_pb2.Item], list[str]]:
    if not isinstance(value, list) or not value:
        raise invalid_argument(f"{name} must be a non-empty list of items", name)
    pairs = [to_item(entry, f"{name}[{index}]") for index, entry in enumerate(value)]
    return [item for item, _ in pairs], [field for _, field in pairs]


async def encode(handler: BaseHandler, payload: list) -> None:
    pairs = [to_item(entry, f"[{index}]") for index, entry in enumerate(payload)]
    items = [item for item, _ in pairs]
    vectors = []
    if items:
        request = clip_pb2.EmbedRequest(items=items, options=clip_pb2.EmbedOptions(raw=True))
        response = await handler.call_grpc(handler.backend.clip.Embed, request)
        for (_, field), result in zip(pairs, response.results, strict=True):
            if result.HasField("error"):
                error = result.error
                raise from_item_error(error.code, f"{field}: {error.message}", field)
            vectors.append(to_array(result.embedding))
    count(handler, items)
    handler.write_json(vectors)


async def _rank_one(handler: BaseHandler, query, query_field, candidates, candidate_fields):
    try:
        response = await handler.call_grpc(
            handler.backend.clip.Rank, clip_pb2.RankRequest(query=query, candidates=candidates))
    except ApiError as error:
        # The server names "query" or "candidates[j]"; answer with the item's own field.
        culprit = re.match(r"query|candidates\[(\d+)\]", error.field or "")
        if culprit:
            error.field = candidate_fields[int(culprit[1])] if culprit[1] else query_field
        raise
    return sorted(response.candidates, key=lambda ranked: ranked.index)


async def rank(handler: BaseHandler, payload: dict) -> None:
    queries, query_fields = item_list(payload.get("queries"), "queries")
    candidates, candidate_fields = item_list(payload.get("candidates"), "candidates")
    rankings = await asyncio.gather(*(
        _rank_one(handler, query, field, candidates, candidate_fields)
        for query, field in zip(queries, query_fields, strict=True)))
    count(handler, queries)
    count(handler, candidates * len(queries))
    handler.write_json({
        "probabilities": [[c.probability for c in ranking] for ranking in rankings],
        "cosine_similarities": [[c.cosine for c in ranking] for ranking in rankings],
    })
