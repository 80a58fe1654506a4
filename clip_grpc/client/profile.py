"""`Client.profile`: where a round trip's time goes, like clip-as-service's profile."""

from __future__ import annotations

import io
import statistics
import time
from typing import TextIO

from PIL import Image as PILImage

from clip_grpc.v1 import clip_pb2


async def measure(client, repeats: int, *, file: TextIO) -> dict[str, float]:
    """Median round trips in ms of Info (no model work), one text and one image embedded, and
    the server's own time for each embed (its `server-timing` trailer)."""
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
    medians, server_medians = {}, {}
    for name, call in calls.items():
        await call()  # warm-up
        timings = [await _timed(call) for _ in range(max(repeats, 1))]
        medians[name] = statistics.median(t for t, _ in timings)
        server_medians[name] = statistics.median(s for _, s in timings)
    report = {
        "info_roundtrip_ms": medians["info"],
        "text_roundtrip_ms": medians["text"],
        "image_roundtrip_ms": medians["image"],
        "text_server_ms": server_medians["text"],
        "image_server_ms": server_medians["image"],
    }
    _print_table(client.target, info, report, repeats, file)
    return report


def _embed_call(stub, item, timeout, metadata):
    request = clip_pb2.EmbedRequest(items=[item])

    async def call():
        rpc = stub.Embed(request, timeout=timeout, metadata=metadata)
        response = await rpc
        if response.results[0].HasField("error"):
            raise RuntimeError(f"profile probe failed: {response.results[0].error.message}")
        return server_ms(await rpc.trailing_metadata())

    return call


def server_ms(trailers) -> float:
    """The total of a `server-timing: total;dur=<ms>` trailer; NaN when the server sent none."""
    for key, value in trailers or ():
        if key == "server-timing":
            for metric in value.split(","):
                name, _, duration = metric.strip().partition(";dur=")
                if name == "total" and duration:
                    return float(duration)
    return float("nan")


async def _timed(call) -> tuple[float, float]:
    """(round trip ms, server ms) of one call."""
    started = time.perf_counter()
    server = await call()
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, server if isinstance(server, float) else float("nan")  # Info: no trailer


def _probe_image(info: clip_pb2.InfoResponse) -> bytes:
    side = info.image_size or 224
    buffer = io.BytesIO()
    PILImage.effect_noise((side, side), 64).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _print_table(target, info, report, repeats, file) -> None:
    rows = [
        ("round trip, Info (transport + gRPC)", report["info_roundtrip_ms"]),
        ("round trip, 1 text", report["text_roundtrip_ms"]),
        ("  of which in the server", report["text_server_ms"]),
        ("round trip, 1 image", report["image_roundtrip_ms"]),
        ("  of which in the server", report["image_server_ms"]),
    ]
    print(
        f"clip-grpc profile of {target}: {info.model_name} ({info.model_family}, "
        f"dim {info.embedding_dim}, {info.device}, {info.dtype}); median of {repeats}",
        file=file,
    )
    for label, value in rows:
        print(f"  {label:<38} {value:8.2f} ms", file=file)
