"""Server replicas as real processes (`python -m clip_grpc`), each on its own loopback port, for
tests that kill one mid-run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.entrypoint_helpers import free_port

STARTUP_S = 120  # importing torch on 2 busy cores


class Replica:
    def __init__(self, model_dir: Path, log_dir: Path, port: int | None = None,
                 metrics: bool = False):
        self.port = port or free_port()
        self.metrics_port = free_port() if metrics else 0
        self.log_path = log_dir / f"replica-{self.port}-{time.monotonic_ns()}.log"
        env = {**os.environ, "CLIP_GRPC_MODEL": str(model_dir), "OMP_WAIT_POLICY": "PASSIVE"}
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "clip_grpc", "--host", "127.0.0.1", "--port",
                 str(self.port), "--device", "cpu", "--dtype", "fp32", "--preprocess-workers",
                 "1", "--grace-seconds", "1", "--metrics-port", str(self.metrics_port)],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def serving(self) -> None:
        """Wait until the replica reports SERVING (fails if the process exits first)."""
        deadline = time.monotonic() + STARTUP_S
        async with grpc.aio.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.log_path.read_text()[-3000:]
                with contextlib.suppress(grpc.RpcError):
                    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                await asyncio.sleep(0.2)
        raise TimeoutError(f"replica on {self.port} not serving: {self.log_path.read_text()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def metric(self, name: str) -> float:
        """The sum of a metric's samples on the replica's /metrics (started with metrics=True)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith((f"{name} ", f"{name}{{")))  # fmt: skip

    def rpcs(self, method: str) -> list[dict]:
        """The access-log entries of `method` calls this replica finished."""
        entries = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("msg") == "rpc" and entry.get("method") == method:
                    entries.append(entry)
        return entries


@contextlib.asynccontextmanager
async def replicas(model_dir: Path, log_dir: Path, count: int, metrics: bool = False):
    """`count` replicas started side by side, all serving."""
    started = [Replica(model_dir, log_dir, metrics=metrics) for _ in range(count)]
    try:
        await asyncio.gather(*(replica.serving() for replica in started))
        yield started
    finally:
        for replica in started:
            replica.stop()
