"""A Node.js client that knows only proto/ (via @grpc/proto-loader) talks to the real server.

Needs `node` and the repository's node_modules (`npm ci`, run by `make install` and in CI)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from clip_grpc.client import Client
from tests.conftest import image_bytes

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "node" / "clip_client.js"


async def test_node_client_embeds_and_checks_health(clip_server, tmp_path):
    node = shutil.which("node")
    if node is None or not (REPO / "node_modules" / "@grpc" / "proto-loader").is_dir():
        pytest.fail("the Node client test needs node and node_modules: run `npm ci`")
    image = tmp_path / "red.png"
    image.write_bytes(image_bytes((220, 40, 40), size=(48, 36)))
    text = "a photo of a red square"

    process = await asyncio.create_subprocess_exec(
        node, str(SCRIPT), clip_server.target, text, str(image),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    seen = json.loads(stdout)

    async with Client(clip_server.target) as client:
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
