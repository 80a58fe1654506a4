"""End to end through gRPC: concurrent EmbedStream calls, each keeping a few messages in flight."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from clip_grpc.v1 import clip_pb2, clip_pb2_grpc

from .stats import summarize


@dataclass(frozen=True)
class StreamLoad:
    streams: int = 4  # concurrent EmbedStream calls
    items_per_message: int = 8
    messages_in_flight: int = 2  # per stream: sent and not yet answered
    seconds: float = 10.0
    warmup_seconds: float = 2.0


def messages(kind: str, images: list[bytes], texts: list[str], per_message: int,
             count: int) -> list[clip_pb2.EmbedStreamRequest]:
    """count request messages, each of per_message distinct items of one kind."""
    pool = images if kind == "image" else texts
    built = []
    for m in range(count):
        items = []
        for k in range(per_message):
            index = (m * per_message + k) % len(pool)
            content = {kind: pool[index]}
            items.append(clip_pb2.Item(id=f"{m}-{k}", **content))
        built.append(clip_pb2.EmbedStreamRequest(items=items))
    return built


class _Tally:
    def __init__(self, window_end: float):
        self.window_end = window_end
        self.items = 0
        self.latencies: list[float] = []

    def record(self, sent: float, answered: float, items: int) -> None:
        if answered <= self.window_end:
            self.items += items
            self.latencies.append(answered - sent)


async def _one_stream(stub, requests, load: StreamLoad, stop_at: float, tally: _Tally) -> None:
    call = stub.EmbedStream()
    sent_at: deque[float] = deque()
    room = asyncio.Semaphore(load.messages_in_flight)

    async def write() -> None:
        index = 0
        while time.perf_counter() < stop_at:
            await room.acquire()
            sent_at.append(time.perf_counter())
            await call.write(requests[index % len(requests)])
            index += 1
        await call.done_writing()

    writer = asyncio.create_task(write())
    try:
        while (response := await call.read()) is not grpc.aio.EOF:
            answered = time.perf_counter()
            failed = [r.error.message for r in response.results if r.HasField("error")]
            if failed:
                raise RuntimeError(f"the server refused items: {failed[:3]}")
            tally.record(sent_at.popleft(), answered, len(response.results))
            room.release()
        await writer
    finally:
        writer.cancel()


async def drive(target: str, requests, load: StreamLoad, seconds: float,
                on_window_end: Callable[[], None] = lambda: None,
                require_answers: bool = True) -> dict:
    """Keep the streams busy for `seconds`; latency is per message (sent -> answered).
    on_window_end runs when the measured window closes, before the streams drain."""
    # One connection per stream, as the Client opens for parallel streams: a server run with
    # --workers gets the streams spread over its processes.
    channels = [grpc.aio.insecure_channel(target, options=[
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.use_local_subchannel_pool", 1),
    ]) for _ in range(load.streams)]
    try:
        started = time.perf_counter()
        tally = _Tally(started + seconds)
        asyncio.get_running_loop().call_later(seconds, on_window_end)
        await asyncio.gather(*(
            _one_stream(clip_pb2_grpc.ClipServiceStub(channels[s]),
                        requests[s::load.streams] or requests, load, started + seconds, tally)
            for s in range(load.streams)
        ))
    finally:
        for channel in channels:
            await channel.close()
    if not tally.latencies and not require_answers:
        return {}
    return summarize(tally.items, seconds, tally.latencies).as_dict()

