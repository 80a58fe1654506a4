"""POST /v1/rank: RankRequest/RankResponse in the proto3 JSON mapping."""

from __future__ import annotations

from clip_grpc.v1 import clip_pb2
from rest_bridge.handlers.base import BodyHandler
from rest_bridge.transcoding import parse_json_request, to_json_dict


class RankHandler(BodyHandler):
    route = "/v1/rank"

    async def handle(self, body: bytearray) -> None:
        request = parse_json_request(
            self.request.headers.get("Content-Type", ""), body, clip_pb2.RankRequest()
        )
        images = [(f"candidates[{index}].image", len(item.image))
                  for index, item in enumerate(request.candidates) if item.HasField("image")]
        if request.query.HasField("image"):
            images.insert(0, ("query.image", len(request.query.image)))
        await self.check_image_sizes(images)
        response = await self.call_grpc(self.backend.clip.Rank, request)
        for item in [request.query, *request.candidates]:
            if item.HasField("image"):
                self.images += 1
            elif item.HasField("text"):
                self.texts += 1
        self.write_json(to_json_dict(response))
