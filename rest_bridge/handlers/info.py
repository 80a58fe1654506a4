"""GET /v1/info: the server's InfoResponse in the proto3 JSON mapping."""

from __future__ import annotations

from clip_grpc.v1 import clip_pb2
from rest_bridge.handlers.base import BaseHandler
from rest_bridge.transcoding import to_json_dict


class InfoHandler(BaseHandler):
    route = "/v1/info"

    async def get(self) -> None:
        response = await self.call_grpc(self.backend.clip.Info, clip_pb2.InfoRequest())
        self.write_json(to_json_dict(response))
