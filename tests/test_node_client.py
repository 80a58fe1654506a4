"""A Node.js client that knows only proto/ (via @grpc/proto-loader) talks to the real server.

Needs `node` and the repository's node_modules (`npm ci`, run by `make install` and in CI)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from clip_grpc.client import Client
from clip_grpc.server import running_server
from tests.certificates import Authority
from tests.conftest import image_bytes, server_config

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "node" / "clip_client.js"


TEXT = "a photo of a red square"


async def run_node(target: str, image, env: dict | None = None) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of clip_client.js against `target`."""
    node = shutil.which("node")
    if node is None or not (REPO / "node_modules" / "@grpc" / "proto-loader").is_dir():
        pytest.fail("the Node client test needs node and node_modules: run `npm ci`")
    process = await asyncio.create_subprocess_exec(
        node, str(SCRIPT), target, TEXT, str(image), env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(image_bytes((220, 40, 40), size=(48, 36)))
    return path


async def test_node_client_embeds_and_checks_health(clip_server, image):
    status, stdout, stderr = await run_node(clip_server.target, image)
    assert status == 0, stderr
    await check_answers(json.loads(stdout), Client(clip_server.target), image)


async def test_node_client_with_tls_a_client_certificate_and_a_token(
        tiny_clip_dir, tiny_clip, image, tmp_path):
    ca = Authority(tmp_path / "pki")
    server, member = ca.issue("server"), ca.issue("node-client")
    tokens = tmp_path / "tokens"
    tokens.write_text("node-token\n")
    config = server_config(tiny_clip_dir, tls_cert=str(server.cert), tls_key=str(server.key),
                           tls_client_ca=str(ca.cert), auth_token_file=str(tokens))
    secure = {"CLIP_GRPC_ROOT_CERT": str(ca.cert), "CLIP_GRPC_CLIENT_CERT": str(member.cert),
              "CLIP_GRPC_CLIENT_KEY": str(member.key)}
    async with running_server(config, loaded=tiny_clip) as running:
        status, stdout, stderr = await run_node(
            running.target, image, {**secure, "CLIP_GRPC_TOKEN": "node-token"})
        assert status == 0, stderr
        client = Client(running.target, root_certificates=ca.cert, token="node-token",
                        certificate_chain=member.cert, private_key=member.key)
        await check_answers(json.loads(stdout), client, image)

        status, _, stderr = await run_node(running.target, image, secure)
        assert status == 1 and "UNAUTHENTICATED" in stderr, stderr
        status, _, stderr = await run_node(
            running.target, image, {"CLIP_GRPC_TOKEN": "node-token"})
        assert status == 1 and "UNAVAILABLE" in stderr, stderr


async def check_answers(seen: dict, client: Client, image) -> None:
    """What the Node client printed is what the Python client gets from the same server."""
    text = TEXT
    async with client:
        info = await client.ainfo()
        expected = await client.aencode([text, image])
    assert seen["health"] == {"overall": "SERVING", "service": "SERVING"}
    assert (seen["model_name"], seen["embedding_dim"]) == (info.model_name, info.embedding_dim)
    text_result, image_result, corrupt = seen["packed"]
    assert (text_result["id"], image_result["id"]) == ("text", "image")
    np.testing.assert_allclose(text_result["values"], expected[0], atol=1e-6)
    np.testing.assert_allclose(image_result["values"], expected[1], atol=1e-6)
    assert corrupt["error"]["code"] == 3 and corrupt["error"]["field"] == "image"
    np.testing.assert_allclose(seen["float_list"][0]["values"], expected[0], atol=1e-6)
