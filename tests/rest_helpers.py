"""Helpers for the REST bridge tests: a multipart encoder and a bridge on a free port."""

from __future__ import annotations

import contextlib
import json
import uuid

import numpy as np
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from tornado.testing import bind_unused_port

from clip_grpc.v1 import clip_pb2
from rest_bridge.app import make_app, make_http_server
from rest_bridge.backend import ClipBackend, open_channels
from rest_bridge.config import BridgeConfig


def encode_form(
    texts: dict[str, str | bytes] | None = None,
    files: dict[str, bytes] | None = None,
) -> tuple[str, bytes]:
    """(Content-Type, body) of a multipart/form-data request: `texts` as plain values,
    `files` as uploads with a filename."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in (files or {}).items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{name}.png"\r\nContent-Type: image/png\r\n\r\n'.encode() + data + b"\r\n"
        )
    for name, value in (texts or {}).items():
        data = value.encode() if isinstance(value, str) else value
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + data + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


class Bridge:
    """A running bridge: `url(path)`, and `post_form` / `post_json` / `get` over real sockets."""

    def __init__(self, base_url: str, app, client: AsyncHTTPClient):
        self.base_url = base_url
        self.app = app
        self.client = client

    def url(self, path: str) -> str:
        return self.base_url + path

    async def fetch(self, path: str, **kwargs) -> HTTPResponse:
        kwargs.setdefault("request_timeout", 30)
        return await self.client.fetch(self.url(path), raise_error=False, **kwargs)

    async def get(self, path: str, headers: dict | None = None) -> HTTPResponse:
        return await self.fetch(path, headers=headers)

    async def post_form(
        self,
        texts: dict | None = None,
        files: dict | None = None,
        headers: dict | None = None,
        path: str = "/syte_test/clip",
    ) -> HTTPResponse:
        content_type, body = encode_form(texts, files)
        headers = {"Content-Type": content_type, **(headers or {})}
        return await self.fetch(path, method="POST", body=body, headers=headers)

    async def post_json(self, path: str, payload, headers: dict | None = None) -> HTTPResponse:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return await self.fetch(
            path, method="POST", body=body,
            headers={"Content-Type": "application/json", **(headers or {})},
        )


@contextlib.asynccontextmanager
async def running_bridge(grpc_target: str, backend: ClipBackend | None = None, **overrides):
    """A bridge on a free port, in this event loop, talking to `grpc_target` (or to a
    stand-in `backend`)."""
    config = BridgeConfig(grpc_target=grpc_target, port=0, **overrides)
    channels = open_channels(config)
    app = make_app(config, backend or ClipBackend.from_channels(channels, grpc_target))
    sock, port = bind_unused_port()
    server = make_http_server(app, config)
    server.add_sockets([sock])
    client = AsyncHTTPClient(force_instance=True, max_clients=64)
    try:
        scheme = "https" if config.https else "http"
        yield Bridge(f"{scheme}://127.0.0.1:{port}", app, client)
    finally:
        client.close()
        server.stop()
        await server.close_all_connections()
        for channel in channels:
            await channel.close()


async def grpc_vectors(stub, items: list[clip_pb2.Item], raw: bool = False) -> np.ndarray:
    """The server's own vectors for items, one row each: what the bridge's answers must hold."""
    options = clip_pb2.EmbedOptions(raw=raw)
    response = await stub.Embed(clip_pb2.EmbedRequest(items=items, options=options))
    return np.stack([np.frombuffer(r.embedding.packed, "<f4") for r in response.results])


def error_of(response: HTTPResponse) -> dict:
    """The `error` object of a JSON error answer, after checking the answer's shape."""
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers.get("request_id")
    body = json.loads(response.body)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["message"]
    return body["error"]
