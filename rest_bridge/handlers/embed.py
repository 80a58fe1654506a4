"""POST /v1/embed: EmbedRequest/EmbedResponse in the proto3 JSON mapping."""

from __future__ import annotations

from clip_grpc.v1 import clip_pb2
from rest_bridge.handlers.base import BodyHandler
from rest_bridge.transcoding import parse_json_request, to_json_dict


class EmbedHandler(BodyHandler):
    route = "/v1/embed"

    async def handle(self, body: bytearray) -> None:
        request = parse_json_request(
            self.request.headers.get("Content-Type", ""), body, clip_pb2.EmbedRequest()
        )
        await self.check_image_sizes([
            (f"items[{index}].image", len(item.image))
            for index, item in enumerate(request.items) if item.HasField("image")
        ])
        # JSON clients get numbers unless they ask for packed bytes (base64) themselves.
        if request.options.format == clip_pb2.EMBEDDING_FORMAT_UNSPECIFIED:
            request.options.format = clip_pb2.EMBEDDING_FORMAT_FLOAT_LIST
        response = await self.call_grpc(self.backend.clip.Embed, request)
        for item, result in zip(request.items, response.results, strict=False):
            if result.HasField("embedding"):
                if item.HasField("image"):
                    self.images += 1
                else:
                    self.texts += 1
        self.write_json(to_json_dict(response))
