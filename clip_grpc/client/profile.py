"""`Client.profile`: where a round trip's time goes, like clip-as-service's profile."""

from __future__ import annotations

import contextlib
import io
import math
import statistics
import time
from typing import TextIO

from PIL import Image as PILImage

from clip_grpc.v1 import clip_pb2

# The server's stages, as its `server-timing` trailer names them, and how the table says them.
STAGES = {
    "preprocess": "decode / tokenise",
    "queue": "queue wait",
    "forward": "forward pass",
    "serialise": "serialise",
}


async def measure(client, repeats: int, *, file: TextIO) -> dict[str, float]:
    """Median round trips in ms of Info (no model work), one text and one image embedded, and
    the server's own time for each embed, in total and per stage (its `server-timing` trailer):
    keys `info_roundtrip_ms`, `{text,image}_roundtrip_ms`, `{text,image}_server_ms` and
    `{text,image}_{preprocess,queue,forward,serialise}_ms` (NaN when the server sent none)."""
    stub = client._stub()
    metadata, timeout = client._metadata, client.timeout
    info = await stub.Info(clip_pb2.InfoRequest(), timeout=timeout, metadata=metadata)
    text = clip_pb2.Item(id="text", text="a photo of a cat")
    image = clip_pb2.Item(id="image", image=_probe_image(info))
    report = {"info_roundtrip_ms": await _median_roundtrip(
        lambda: stub.Info(clip_pb2.InfoRequest(), timeout=timeout, metadata=metadata), repeats
    )}
    for name, item in (("text", text), ("image", image)):
        call = _embed_call(stub, item, timeout, metadata)
        await call()  # warm-up
        timings = [await _timed(call) for _ in range(max(repeats, 1))]
        report[f"{name}_roundtrip_ms"] = statistics.median(t for t, _ in timings)
        for stage in ("total", *STAGES):
            key = f"{name}_server_ms" if stage == "total" else f"{name}_{stage}_ms"
            report[key] = statistics.median(s.get(stage, math.nan) for _, s in timings)
    _print_table(client.target, info, report, repeats, file)
    return report


async def _median_roundtrip(call, repeats: int) -> float:
    await call()  # warm-up
    durations = []
    for _ in range(max(repeats, 1)):
        started = time.perf_counter()
        await call()
        durations.append((time.perf_counter() - started) * 1000)
    return statistics.median(durations)


def _embed_call(stub, item, timeout, metadata):
    request = clip_pb2.EmbedRequest(items=[item])

    async def call():
        rpc = stub.Embed(request, timeout=timeout, metadata=metadata)
        response = await rpc
        if response.results[0].HasField("error"):
            raise RuntimeError(f"profile probe failed: {response.results[0].error.message}")
        return server_timing(await rpc.trailing_metadata())

    return call


def server_timing(trailers) -> dict[str, float]:
    """The metrics of a `server-timing` trailer in ms, e.g. {"total": 4.8, "forward": 3.5};
    empty when the server sent none."""
    timings = {}
    for key, value in trailers or ():
        if key != "server-timing":
            continue
        for metric in value.split(","):
            name, _, params = metric.strip().partition(";")
            for param in params.split(";"):
                field, _, number = param.strip().partition("=")
                if field == "dur" and name:
                    with contextlib.suppress(ValueError):
                        timings[name] = float(number)
    return timings


def server_ms(trailers) -> float:
    """The total of a `server-timing` trailer; NaN when the server sent none."""
    return server_timing(trailers).get("total", math.nan)


async def _timed(call) -> tuple[float, dict[str, float]]:
    """(round trip ms, the server's timings in ms) of one call."""
    started = time.perf_counter()
    server = await call()
    return (time.perf_counter() - started) * 1000, server


def _probe_image(info: clip_pb2.InfoResponse) -> bytes:
    side = info.image_size or 224
    buffer = io.BytesIO()
    PILImage.effect_noise((side, side), 64).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _print_table(target, info, report, repeats, file) -> None:
    rows = [("round trip, Info (transport + gRPC)", report["info_roundtrip_ms"])]
    for name in ("text", "image"):
        rows.append((f"round trip, 1 {name}", report[f"{name}_roundtrip_ms"]))
        rows.append(("  of which in the server", report[f"{name}_server_ms"]))
        rows += [(f"    {label}", report[f"{name}_{stage}_ms"]) for stage, label in STAGES.items()]
    print(
        f"clip-grpc profile of {target}: {info.model_name} ({info.model_family}, "
        f"dim {info.embedding_dim}, {info.device}, {info.dtype}); median of {repeats}",
        file=file,
    )
    for label, value in rows:
        print(f"  {label:<38} {value:9.3f} ms", file=file)
