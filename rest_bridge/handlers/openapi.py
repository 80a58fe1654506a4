"""GET /openapi.json: the HTTP API described as OpenAPI 3.1."""

from __future__ import annotations

from rest_bridge.handlers.base import BaseHandler
from rest_bridge.openapi import openapi_document


class OpenApiHandler(BaseHandler):
    route = "/openapi.json"

    def get(self) -> None:
        self.write_json(openapi_document())
