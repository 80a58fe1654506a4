"""POST /encode and POST /rank: paths both CLIP-API-service and clip-as-service's HTTP client
use. The body's shape says which one is calling: a jina DataRequest is an object with `data`
or `header`; CLIP-API-service sends a list (/encode) or `{queries, candidates}` (/rank)."""

from __future__ import annotations

from clip_grpc.jina_docs import ENCODE, RANK
from rest_bridge.handlers import clip_api_service
from rest_bridge.handlers.base import BodyHandler
from rest_bridge.handlers.jina_http import JinaHandlerMixin
from rest_bridge.status_map import invalid_argument
from rest_bridge.transcoding import parse_any_json


def is_jina_request(payload) -> bool:
    return isinstance(payload, dict) and ("data" in payload or "header" in payload)


class EncodeRouteHandler(JinaHandlerMixin, BodyHandler):
    route = "/encode"

    async def handle(self, body: bytes) -> None:
        payload = parse_any_json(body)
        if isinstance(payload, list):
            await clip_api_service.encode(self, payload)
        elif is_jina_request(payload):
            await self.answer_jina(payload, ENCODE)
        else:
            raise invalid_argument(
                "POST /encode takes a JSON list of {text | img_blob | img_uri} items "
                "(CLIP-API-service) or a jina DataRequest {header, parameters, data} "
                "(clip-as-service)")


class RankRouteHandler(JinaHandlerMixin, BodyHandler):
    route = "/rank"

    async def handle(self, body: bytes) -> None:
        payload = parse_any_json(body)
        if is_jina_request(payload):
            await self.answer_jina(payload, RANK)
        elif isinstance(payload, dict):
            await clip_api_service.rank(self, payload)
        else:
            raise invalid_argument(
                "POST /rank takes {queries: [item], candidates: [item]} (CLIP-API-service) or "
                "a jina DataRequest {header, parameters, data} (clip-as-service)")
