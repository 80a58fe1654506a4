"""POST /syte_test/clip: seed 002's multipart endpoint."""

from __future__ import annotations

from rest_bridge.form_response import build_form_response
from rest_bridge.handlers.base import BodyHandler
from rest_bridge.multipart import IMAGE, build_embed_request, forget_images, parse_form


class ClipFormHandler(BodyHandler):
    route = "/syte_test/clip"

    async def handle(self, body: bytearray) -> None:
        truncate = self.query_flag("truncate")
        items = parse_form(
            self.request.headers.get("Content-Type", ""), body, self.config.max_form_fields
        )
        await self.check_image_sizes(
            [(item.field, len(item.image)) for item in items if item.kind == IMAGE]
        )
        request = build_embed_request(items, truncate)
        # The body's last references (the items' views and this frame's): it is freed here.
        items = forget_images(items)
        del body
        embedding = self.embed(request)
        del request  # embed() frees it once serialized
        response = await embedding
        answer = build_form_response(items, response)
        self.images = sum(item.kind == IMAGE for item in items)
        self.texts = len(items) - self.images
        self.write_json(answer)
