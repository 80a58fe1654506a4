"""SIGTERM to the REST bridge loses no request it has started: `python -m rest_bridge` with
requests in flight (one waiting on a slow server, one still uploading its body) stops taking
connections, answers 503 to new requests and to /readyz, finishes both with 200 and exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket

import numpy as np
import pytest

from clip_grpc.v1 import clip_pb2
from tests.bridge_process import MIB, StandInClip, bridge_process, stand_in_server
from tests.rest_helpers import encode_form
from tests.waiting import until


class HeldClip(StandInClip):
    """Embeds (a constant vector per item) only once `release` is set."""

    def __init__(self):
        super().__init__()
        self.release = asyncio.Event()
        self.waiting = 0

    async def Embed(self, request, context):
        self._record("Embed", context)
        self.waiting += 1
        await self.release.wait()
        vector = np.ones(4, dtype="<f4").tobytes()
        return clip_pb2.EmbedResponse(results=[
            clip_pb2.EmbedResult(id=item.id, embedding=clip_pb2.Embedding(dim=4, packed=vector))
            for item in request.items
        ])  # fmt: skip


class RawConnection:
    """One keep-alive HTTP/1.1 connection, driven by hand (to pause mid-body, and to reuse it
    after the bridge has stopped listening)."""

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        self = cls()
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        return self

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_head(self, method: str, path: str, headers: dict[str, str]) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: bridge", *(f"{k}: {v}" for k, v in
                                                               headers.items())]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def post_form_head(self, texts: dict, files: dict | None = None) -> bytes:
        """Sends the head of a multipart POST /syte_test/clip; returns the body to send."""
        content_type, body = encode_form(texts, files)
        await self.send_head("POST", "/syte_test/clip", {
            "Content-Type": content_type, "Content-Length": str(len(body))})
        return body

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body) of the next answer."""
        async def read():
            status = int((await self.reader.readline()).split()[1])
            headers = {}
            while (line := (await self.reader.readline()).decode().strip()):
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", 0)))
            return status, headers, body

        return await asyncio.wait_for(read(), 60)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def in_flight(metrics: bytes) -> float:
    for line in metrics.decode().splitlines():
        if line.startswith('rest_bridge_requests_in_flight{route="/syte_test/clip"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
async def held():
    servicer = HeldClip()
    async with stand_in_server(servicer) as (target, _):
        try:
            yield target, servicer
        finally:
            servicer.release.set()


async def test_sigterm_finishes_requests_in_flight_and_refuses_new_ones(held):
    target, servicer = held
    async with bridge_process(target, "--grace-seconds", "300") as bridge:
        port = bridge.port
        # In flight at the signal: one waiting for the server, one half uploaded.
        waiting = await RawConnection.open(port)
        await waiting.send(await waiting.post_form_head({"text-1": "a cat"}))
        await until(lambda: servicer.waiting == 1)
        uploading = await RawConnection.open(port)
        body = await uploading.post_form_head({"text-1": "a dog"}, {"image-1": os.urandom(4 * MIB)})
        await uploading.send(body[: len(body) // 2])
        # A third connection, open and idle (keep-alive), to ask once the bridge is stopping.
        idle = await RawConnection.open(port)
        await idle.send_head("GET", "/readyz", {})
        assert (await idle.response())[0] == 200

        async def both_in_flight() -> bool:
            metrics = await RawConnection.open(port)
            await metrics.send_head("GET", "/metrics", {"Connection": "close"})
            answer = await metrics.response()
            await metrics.close()
            return in_flight(answer[2]) == 2

        await until(both_in_flight)

        bridge.process.send_signal(signal.SIGTERM)
        await bridge.wait_log("stopping")
        await until(lambda: refuses_connections(port))  # it stopped listening
        await idle.send_head("GET", "/readyz", {})
        status, _, answer = await idle.response()
        assert status == 503 and "shutting down" in json.loads(answer)["error"]["message"]
        await idle.send_head("GET", "/v1/info", {})
        status, headers, answer = await idle.response()
        assert (status, json.loads(answer)["error"]["code"]) == (503, "UNAVAILABLE")
        assert headers["connection"] == "close" and headers["retry-after"] == "1"
        assert bridge.process.returncode is None  # still draining: two requests in flight

        await uploading.send(body[len(body) // 2:])
        await until(lambda: servicer.waiting == 2)  # the upload finished: its call is out
        servicer.release.set()
        for connection in (waiting, uploading):
            status, _, answer = await connection.response()
            assert status == 200 and len(json.loads(answer)["text_1_vector"]) == 4
        # Exits once idle, not at the end of the grace (300 s): the timeout is far shorter.
        assert await asyncio.wait_for(bridge.process.wait(), 120) == 0
        for connection in (waiting, uploading, idle):
            await connection.close()
    assert not any("grace period over" in line for line in bridge.log_lines)


def refuses_connections(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def test_when_the_grace_runs_out_the_bridge_closes_what_is_left_and_exits(held):
    target, servicer = held  # never released while the bridge runs
    async with bridge_process(target, "--grace-seconds", "1") as bridge:
        stuck = await RawConnection.open(bridge.port)
        await stuck.send(await stuck.post_form_head({"text-1": "a cat"}))
        await until(lambda: servicer.waiting == 1)
        bridge.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(bridge.process.wait(), 120) == 0
        assert await asyncio.wait_for(stuck.reader.read(), 60) == b""  # closed, unanswered
        await stuck.close()
    assert any("grace period over: closing 1 requests" in line for line in bridge.log_lines)
