"""`python -m rest_bridge` as a real process, and TLS towards the server."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from tornado.httpclient import AsyncHTTPClient

from tests.bridge_process import bridge_process
from tests.certificates import self_signed_certificate
from tests.conftest import image_bytes
from tests.rest_helpers import encode_form, error_of, running_bridge


async def test_the_cli_serves_logs_json_and_stops_on_sigterm(clip_server):
    env = {"REST_BRIDGE_GRPC_TARGET": clip_server.target}  # the target from the environment
    async with bridge_process(None, env=env) as bridge:
        client = AsyncHTTPClient(force_instance=True)
        try:
            content_type, body = encode_form({"text-1": "a cat"}, {"image-1": image_bytes()})
            response = await client.fetch(
                bridge.base_url + "/syte_test/clip", method="POST", body=body,
                headers={"Content-Type": content_type, "request_id": "123"})
            assert response.code == 200 and response.headers["request_id"] == "123"
        finally:
            client.close()
    assert bridge.process.returncode == 0  # stopped by SIGTERM on leaving the block
    lines = [json.loads(line) for line in bridge.log_lines]  # every line is JSON
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])  # the server's format
    access = [line for line in lines if line["logger"] == "rest_bridge.access"]
    assert any(
        line["request_id"] == "123" and line["route"] == "/syte_test/clip"
        and line["status"] == 200 and (line["images"], line["texts"]) == (1, 1)
        for line in access
    )


def test_bad_settings_exit_with_a_message():
    result = subprocess.run(
        [sys.executable, "-m", "rest_bridge", "--port", "http"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "--port" in result.stderr


@pytest.fixture
def certificate(tmp_path):
    return self_signed_certificate(tmp_path, "DNS:clip.test")


async def test_tls_towards_the_server(certificate):
    key, cert = certificate
    server = grpc.aio.server()
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    target = f"127.0.0.1:{port}"
    try:
        async with running_bridge(
            target, grpc_root_cert=str(cert), grpc_tls_server_name="clip.test"
        ) as trusted:
            assert (await trusted.get("/readyz")).code == 200
        # Plaintext against a TLS server, or a certificate nobody vouches for: not ready.
        async with running_bridge(target) as plaintext:
            assert (await plaintext.get("/readyz")).code == 503
        async with running_bridge(target, grpc_tls=True) as untrusting:
            response = await untrusting.get("/readyz")
            assert response.code == 503 and error_of(response)["code"] == "UNAVAILABLE"
    finally:
        await server.stop(None)
