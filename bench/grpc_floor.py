"""`python -m bench.grpc_floor`: what grpcio's asyncio server alone costs per item.

A bare ClipService whose EmbedStream answers every item of a message with a constant vector
(no engine, no threads, no interceptors) runs as its own process and gets the serving-overhead
section's stream: 4 streams x 2 messages in flight, the same texts and 224x224 JPEGs. Its CPU
per item (the whole process, and its event-loop thread) is the floor under the server's event
loop: what is left above it is the project's own code and hand-offs.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2_grpc

from clip_grpc.v1 import clip_pb2, clip_pb2_grpc

from . import grpc_stream, machine, processes
from .overhead import make_inputs

DIM = 32  # the near-free model's


class ConstantService(clip_pb2_grpc.ClipServiceServicer):
    def __init__(self, dim: int):
        self.vector = np.zeros(dim, dtype="<f4").tobytes()
        self.dim = dim

    async def EmbedStream(self, request_iterator, context):
        async for request in request_iterator:
            response = clip_pb2.EmbedStreamResponse()
            for item in request.items:
                result = response.results.add(id=item.id)
                result.embedding.dim = self.dim
                result.embedding.packed = self.vector
            yield response


async def serve(port: int, dim: int) -> None:
    server = grpc.aio.server()
    clip_pb2_grpc.add_ClipServiceServicer_to_server(ConstantService(dim), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def measure(per_message: int, seconds: float) -> list[dict]:
    port = processes.free_port()
    child = processes.Child("grpc-floor", ["-m", "bench.grpc_floor", "--serve", str(port)])
    target = f"127.0.0.1:{port}"
    rows = []
    try:
        await child.wait_until(lambda: processes.grpc_serving(target), 60)
        images, texts = make_inputs(64)
        load = grpc_stream.StreamLoad(items_per_message=per_message, warmup_seconds=1.0)
        for kind in ("text", "image"):
            requests = grpc_stream.messages(kind, images, texts, per_message, 16)
            await grpc_stream.drive(target, requests, load, 1.0, require_answers=False)
            pid = child.process.pid
            before, loop_before = child.cpu_seconds(), child.thread_cpu_seconds()[pid]
            started = time.perf_counter()
            done = await grpc_stream.drive(target, requests, load, seconds)
            wall = time.perf_counter() - started
            after, loop_after = child.cpu_seconds(), child.thread_cpu_seconds()[pid]
            items = done["items"]
            rows.append({"kind": kind, "items_per_message": per_message,
                         "items_per_s": items / wall,
                         "server_cpu_us": 1e6 * (after - before) / items,
                         "event_loop_us": 1e6 * (loop_after - loop_before) / items})
    finally:
        child.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the child's own role
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--items-per-message", default="8,32")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, DIM))
        return
    print(machine.one_line(machine.describe()))
    for per_message in map(int, args.items_per_message.split(",")):
        for row in asyncio.run(measure(per_message, args.seconds)):
            print(f"  {row['kind']:5} x{per_message:<3}: {row['items_per_s']:8,.0f} items/s, "
                  f"server CPU {row['server_cpu_us']:5.0f} us/item, "
                  f"event loop {row['event_loop_us']:5.0f} us/item")
    print(f"load {machine.load_average()}")


if __name__ == "__main__":
    main()
