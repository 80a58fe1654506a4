"""The REST bridge: seed-002 multipart requests (image-1 + text-1), and the same two items sent
straight to the server with a unary Embed, so the bridge's own cost can be read off."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from clip_grpc.v1 import clip_pb2, clip_pb2_grpc

from .stats import summarize

ITEMS_PER_REQUEST = 2  # one image, one text


def seed_002_form(image: bytes, text: str) -> tuple[str, bytes]:
    """(Content-Type, body) of the seed's example: parts image-1 (a JPEG) and text-1."""
    boundary = uuid.uuid4().hex
    body = b"".join([
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"image-1\"; "
        f"filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n".encode(), image,
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"text-1\"\r\n\r\n"
        f"{text}\r\n--{boundary}--\r\n".encode(),
    ])
    return f"multipart/form-data; boundary={boundary}", body


async def _closed_loop(send, count: int, concurrency: int, seconds: float) -> dict:
    """`concurrency` workers, each sending request after request for `seconds`."""
    latencies: list[float] = []
    sent = 0
    started = time.perf_counter()
    stop_at = started + seconds

    async def worker(offset: int) -> None:
        nonlocal sent
        index = offset
        while time.perf_counter() < stop_at:
            begin = time.perf_counter()
            sent += 1
            await send(index % count)
            end = time.perf_counter()
            if end <= stop_at:
                latencies.append(end - begin)
            index += concurrency

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    row = summarize(ITEMS_PER_REQUEST * len(latencies), seconds, latencies).as_dict()
    return {**row, "sent": sent}


async def rest_load(base_url: str, images: list[bytes], texts: list[str], concurrency: int,
                    seconds: float, warmup_seconds: float) -> dict:
    forms = [seed_002_form(image, text) for image, text in zip(images, texts, strict=True)]
    client = AsyncHTTPClient(force_instance=True, max_clients=max(concurrency, 10))

    async def send(index: int) -> None:
        content_type, body = forms[index]
        response = await client.fetch(HTTPRequest(
            f"{base_url}/syte_test/clip", method="POST", body=body,
            headers={"Content-Type": content_type, "request_id": str(index)}))
        if b"image_1_vector" not in response.body or b"text_1_vector" not in response.body:
            raise RuntimeError(f"unexpected answer: {response.body[:200]!r}")

    try:
        warmup = await _closed_loop(send, len(forms), concurrency, warmup_seconds)
        row = await _closed_loop(send, len(forms), concurrency, seconds)
        return {**row, "sent": warmup["sent"] + row["sent"]}
    finally:
        client.close()


async def grpc_unary_load(target: str, images: list[bytes], texts: list[str], concurrency: int,
                          seconds: float, warmup_seconds: float) -> dict:
    requests = [clip_pb2.EmbedRequest(items=[clip_pb2.Item(id="image-1", image=image),
                                             clip_pb2.Item(id="text-1", text=text)])
                for image, text in zip(images, texts, strict=True)]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = clip_pb2_grpc.ClipServiceStub(channel)

        async def send(index: int) -> None:
            response = await stub.Embed(requests[index])
            if any(result.HasField("error") for result in response.results):
                raise RuntimeError(f"the server refused an item: {response}")

        warmup = await _closed_loop(send, len(requests), concurrency, warmup_seconds)
        row = await _closed_loop(send, len(requests), concurrency, seconds)
        return {**row, "sent": warmup["sent"] + row["sent"]}
