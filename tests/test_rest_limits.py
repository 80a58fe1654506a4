"""Issue 9, the bridge's rows: requests at once, slow clients, oversized heads and images,
memory per request. (The 503 without the internal address is in test_rest_e2e.)"""

from __future__ import annotations

import asyncio
import base64
import json
import os

import grpc
import pytest
from tornado.httpclient import AsyncHTTPClient

from rest_bridge.backend import ClipBackend
from tests.bridge_process import MIB, StandInClip, bridge_process, stand_in_server
from tests.rest_helpers import encode_form, error_of, running_bridge
from tests.test_rest_e2e import _HangingStub
from tests.waiting import until


def hanging_backend() -> tuple[ClipBackend, _HangingStub]:
    stub = _HangingStub()
    return ClipBackend(target="slow:1", clip=stub, health=None), stub


# ---- requests at once ------------------------------------------------------------------
async def test_requests_beyond_the_bound_get_429_and_probes_stay_open():
    backend, stub = hanging_backend()
    async with running_bridge("slow:1", backend=backend, max_concurrent_requests=2,
                              retry_after_s=2) as bridge:
        hanging = [asyncio.ensure_future(bridge.post_form({"text-1": "a"})) for _ in range(2)]
        await until(lambda: len(stub.calls) == 2)
        refused = await bridge.post_form({"text-1": "a"})
        assert (refused.code, error_of(refused)["code"]) == (429, "RESOURCE_EXHAUSTED")
        assert refused.headers["Retry-After"] == "2"
        assert "2 requests" in error_of(refused)["message"]
        assert (await bridge.get("/healthz")).code == 200
        assert (await bridge.get("/metrics")).code == 200
        # The slots come back when the requests end.
        for call in stub.calls:
            call.future.set_exception(unavailable())
        assert [r.code for r in await asyncio.gather(*hanging)] == [503, 503]
        third = asyncio.ensure_future(bridge.post_form({"text-1": "a"}))
        await until(lambda: len(stub.calls) == 3)
        stub.calls[2].future.set_exception(unavailable())
        assert (await third).code == 503


def unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                grpc.aio.Metadata(), details="gone")


# ---- slow clients ------------------------------------------------------------------------
async def raw_exchange(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Sends a head (and part of a body), then reads until the bridge closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


def port_of(bridge) -> int:
    return int(bridge.base_url.rsplit(":", 1)[1])


def parse_answer(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def test_200_stalled_bodies_get_408_and_are_let_go():
    backend, stub = hanging_backend()
    async with running_bridge("slow:1", backend=backend, body_timeout_s=1.0,
                              max_concurrent_requests=256) as bridge:
        head = (b"POST /syte_test/clip HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        answers = await asyncio.gather(*(
            raw_exchange(port_of(bridge), head, b"--b\r\n" + b"x" * 1000) for _ in range(200)))
        for raw in answers:
            status, body = parse_answer(raw)
            assert (status, body["error"]["code"]) == (408, "REQUEST_TIMEOUT")
        assert not stub.calls  # nothing was forwarded
        metrics = (await bridge.get("/metrics")).body.decode()
        assert 'rest_bridge_requests_in_flight{route="/syte_test/clip"} 0.0' in metrics
        # The slots are free again.
        assert (await bridge.get("/healthz")).code == 200


async def test_an_idle_connection_is_closed():
    backend, _ = hanging_backend()
    async with running_bridge("slow:1", backend=backend, idle_timeout_s=0.5) as bridge:
        # Half a head, never finished: closed after the idle timeout, not held forever.
        assert await raw_exchange(port_of(bridge), b"GET /healthz HTTP/1.1\r\nHost") == b""


# ---- heads and images --------------------------------------------------------------------
async def test_a_100_kb_header_gets_a_json_431():
    backend, _ = hanging_backend()
    async with running_bridge("slow:1", backend=backend) as bridge:
        response = await bridge.get("/healthz", headers={"X-Padding": "a" * 100_000})
        assert (response.code, error_of(response)["code"]) == (
            431, "REQUEST_HEADER_FIELDS_TOO_LARGE")
        assert "65536" in error_of(response)["message"]
        assert (await bridge.get("/healthz", headers={"X-Padding": "a" * 30_000})).code == 200


@pytest.mark.parametrize("flag", [None, 1000])
async def test_images_over_the_servers_limit_get_413_before_anything_is_forwarded(flag):
    servicer = StandInClip(max_image_bytes=1000 if flag is None else 10 * MIB)
    overrides = {} if flag is None else {"max_image_bytes": flag}
    async with stand_in_server(servicer) as (target, _), running_bridge(target, **overrides) as b:
        small, big = b"x" * 1000, b"x" * 1001
        response = await b.post_form(texts={"text-1": "a"}, files={"image-1": small,
                                                                    "image-2": big})
        error = error_of(response)
        assert (response.code, error["code"], error["field"]) == (413, "PAYLOAD_TOO_LARGE",
                                                                  "image-2")
        assert "1001 bytes" in error["message"] and "1000 bytes" in error["message"]
        big64 = base64.b64encode(big).decode()
        response = await b.post_json("/v1/embed", {"items": [{"text": "a"}, {"image": big64}]})
        assert (response.code, error_of(response)["field"]) == (413, "items[1].image")
        response = await b.post_json("/v1/rank", {"query": {"text": "a"},
                                                  "candidates": [{"image": big64}]})
        assert (response.code, error_of(response)["field"]) == (413, "candidates[0].image")
        # At or under the limit, it goes on to the server.
        response = await b.post_form(files={"image-1": small})
        assert response.code == 400 and "not an image" in error_of(response)["message"]
    assert servicer.calls.count("Embed") == 1
    assert servicer.calls.count("Info") == (1 if flag is None else 0)


# ---- memory ------------------------------------------------------------------------------
async def test_eight_concurrent_45_mb_bodies_are_held_at_most_about_twice():
    """Was 1.26 GB above the baseline (3.5x the bodies) and 1.1 GB kept afterwards."""
    files = {f"image-{i}": os.urandom(15 * 1000 * 1000) for i in range(3)}
    content_type, body = encode_form(files=files)
    total = 8 * len(body)
    async with stand_in_server() as (target, _), bridge_process(target) as bridge:
        baseline = bridge.rss_bytes()
        client = AsyncHTTPClient(force_instance=True, max_clients=8)
        try:
            responses = await asyncio.gather(*(
                client.fetch(bridge.base_url + "/syte_test/clip", method="POST", body=body,
                             headers={"Content-Type": content_type}, raise_error=False,
                             request_timeout=120)
                for _ in range(8)))
        finally:
            client.close()
        assert [r.code for r in responses] == [400] * 8  # the stand-in refuses every image
        peak, kept = bridge.rss_bytes("VmHWM") - baseline, bridge.rss_bytes() - baseline
    # Measured 1.8-2.3x the bodies on a quiet machine, 2.6x once in a loaded CI run (when the
    # eight requests' parsing overlaps more); the bug this guards against held 3.5x.
    assert peak < 3.0 * total, f"peak {peak / MIB:.0f} MiB for {total / MIB:.0f} MiB of bodies"
    assert kept < 0.25 * total, f"{kept / MIB:.0f} MiB kept after the requests"
