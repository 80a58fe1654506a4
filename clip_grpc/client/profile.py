"""`Client.profile`: where a round trip's time goes, like clip-as-service's profile."""

from __future__ import annotations

import io
import statistics
import time
from typing import TextIO

from PIL import Image as PILImage

from clip_grpc.v1 import clip_pb2


async def measure(client, repeats: int, *, file: TextIO) -> dict[str, float]:
    """Median round trips in ms of Info (no model work), one text and one image embedded."""
    stub = client._stub()
    metadata, timeout = client._metadata, client.timeout
    info = await stub.Info(clip_pb2.InfoRequest(), timeout=timeout, metadata=metadata)
    text = clip_pb2.Item(id="text", text="a photo of a cat")
    image = clip_pb2.Item(id="image", image=_probe_image(info))
    calls = {
        "info": lambda: stub.Info(clip_pb2.InfoRequest(), timeout=timeout, metadata=metadata),
        "text": _embed_call(stub, text, timeout, metadata),
        "image": _embed_call(stub, image, timeout, metadata),
    }
    medians = {}
    for name, call in calls.items():
        await call()  # warm-up
        medians[name] = statistics.median([await _timed(call) for _ in range(max(repeats, 1))])
    report = {
        "info_roundtrip_ms": medians["info"],
        "text_roundtrip_ms": medians["text"],
        "image_roundtrip_ms": medians["image"],
        "text_server_ms_estimate": max(medians["text"] - medians["info"], 0.0),
        "image_server_ms_estimate": max(medians["image"] - medians["info"], 0.0),
    }
    _print_table(client.target, info, report, repeats, file)
    return report


def _embed_call(stub, item, timeout, metadata):
    request = clip_pb2.EmbedRequest(items=[item])

    async def call():
        response = await stub.Embed(request, timeout=timeout, metadata=metadata)
        if response.results[0].HasField("error"):
            raise RuntimeError(f"profile probe failed: {response.results[0].error.message}")

    return call


async def _timed(call) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


def _probe_image(info: clip_pb2.InfoResponse) -> bytes:
    side = info.image_size or 224
    buffer = io.BytesIO()
    PILImage.effect_noise((side, side), 64).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _print_table(target, info, report, repeats, file) -> None:
    rows = [
        ("round trip, Info (transport + gRPC)", report["info_roundtrip_ms"]),
        ("round trip, 1 text", report["text_roundtrip_ms"]),
        ("  server work (estimate)", report["text_server_ms_estimate"]),
        ("round trip, 1 image", report["image_roundtrip_ms"]),
        ("  server work (estimate)", report["image_server_ms_estimate"]),
    ]
    print(
        f"clip-grpc profile of {target}: {info.model_name} ({info.model_family}, "
        f"dim {info.embedding_dim}, {info.device}, {info.dtype}); median of {repeats}",
        file=file,
    )
    for label, value in rows:
        print(f"  {label:<38} {value:8.2f} ms", file=file)
