"""TLS (a private root) and the bearer token reach the server on unary and streaming calls."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from clip_grpc.client import Client
from clip_grpc.v1 import clip_pb2, clip_pb2_grpc
from tests.certificates import self_signed_certificate

TOKEN = "s3cret"


@pytest.fixture
def certificate(tmp_path):
    return self_signed_certificate(tmp_path, "IP:127.0.0.1")


class TokenCheckingService(clip_pb2_grpc.ClipServiceServicer):
    """Answers only callers with the token; an item's embedding is [len(text), 0]."""

    async def _check(self, context):
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {TOKEN}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")

    async def Info(self, request, context):
        await self._check(context)
        return clip_pb2.InfoResponse(model_name="fake", embedding_dim=2)

    async def EmbedStream(self, request_iterator, context):
        await self._check(context)
        async for request in request_iterator:
            yield clip_pb2.EmbedStreamResponse(results=[_fake(item) for item in request.items])


def _fake(item):
    packed = np.array([len(item.text), 0], dtype="<f4").tobytes()
    return clip_pb2.EmbedResult(id=item.id, embedding=clip_pb2.Embedding(dim=2, packed=packed))


async def test_tls_and_token(certificate):
    key, cert = certificate
    server = grpc.aio.server()
    clip_pb2_grpc.add_ClipServiceServicer_to_server(TokenCheckingService(), server)
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        async with Client(f"127.0.0.1:{port}", root_certificates=cert, token=TOKEN) as client:
            assert (await client.ainfo()).model_name == "fake"
            embeddings = await client.aencode(["a", "bbb", "cc"])
            assert embeddings[:, 0].tolist() == [1, 3, 2]
        async with Client(f"127.0.0.1:{port}", root_certificates=cert, retries=0) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await anonymous.aencode(["a"])
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with Client(f"127.0.0.1:{port}", token=TOKEN, retries=0) as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await plaintext.ainfo()
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)
