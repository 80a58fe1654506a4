"""POST /syte_test/clip: seed 002's multipart endpoint."""

from __future__ import annotations

from rest_bridge.form_response import build_form_response
from rest_bridge.handlers.base import BodyHandler
from rest_bridge.multipart import IMAGE, build_embed_request, parse_form


class ClipFormHandler(BodyHandler):
    route = "/syte_test/clip"

    async def handle(self, body: bytes) -> None:
        truncate = self.query_flag("truncate")
        items = parse_form(
            self.request.headers.get("Content-Type", ""), body, self.config.max_form_fields
        )
        response = await self.call_grpc(
            self.backend.clip.Embed, build_embed_request(items, truncate)
        )
        answer = build_form_response(items, response)
        self.images = sum(item.kind == IMAGE for item in items)
        self.texts = len(items) - self.images
        self.write_json(answer)
