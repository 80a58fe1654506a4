"""The server and the REST bridge, each in its own process, so the load generator's CPU work
never runs on the server's event loop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Child:
    """A subprocess whose output goes to a log file that is shown if it fails."""

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None):
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def log_tail(self, lines: int = 30) -> str:
        text = Path(self.log.name).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (all its threads)."""
        return stat_cpu_seconds(Path(f"/proc/{self.process.pid}/stat"))

    def thread_cpu_seconds(self) -> dict[int, float]:
        return thread_cpu_seconds(self.process.pid)

    async def wait_until(self, ready: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not await ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n"
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout_s}s:\n{self.log_tail()}")
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


async def grpc_serving(target: str) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


async def http_ready(url: str) -> bool:
    client = AsyncHTTPClient(force_instance=True)
    try:
        response = await client.fetch(url, raise_error=False, request_timeout=2.0)
    except OSError:
        return False
    finally:
        client.close()
    return response.code == 200


def server_command(model: Path, port: int, server_flags: list[str], device: str,
                   metrics_port: int = 0) -> list[str]:
    return ["-m", "clip_grpc", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
            "--device", device, "--log-format", "text", "--log-level", "WARNING",
            "--metrics-port", str(metrics_port), *server_flags]


async def start_server(model: Path, server_flags: list[str], env: dict[str, str],
                       device: str = "cpu") -> tuple:
    """`python -m clip_grpc` on a free port; returns (child, target) once it is SERVING. Its
    /metrics (on another free port) is at child.metrics_url, for model_busy_totals."""
    port, metrics_port = free_port(), free_port()
    child = Child("server", server_command(model, port, server_flags, device, metrics_port), env)
    child.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    target = f"127.0.0.1:{port}"
    try:
        await child.wait_until(lambda: grpc_serving(target), timeout_s=600)
    except BaseException:
        child.stop()
        raise
    return child, target


async def start_bridge(grpc_target: str) -> tuple:
    """`python -m rest_bridge` on a free port; returns (child, base_url) once it accepts."""
    port = free_port()
    child = Child("rest-bridge", ["-m", "rest_bridge", "--grpc-target", grpc_target,
                                  "--host", "127.0.0.1", "--port", str(port),
                                  "--log-level", "WARNING"])
    try:
        await child.wait_until(lambda: http_ready(f"http://127.0.0.1:{port}/readyz"), 60)
    except BaseException:
        child.stop()
        raise
    return child, f"http://127.0.0.1:{port}"


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU time of each thread of a process so far, by thread id."""
    threads = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            threads[int(stat.parent.name)] = stat_cpu_seconds(stat)
        except OSError:  # the thread ended while we looked
            continue
    return threads


def stat_cpu_seconds(stat: Path) -> float:
    """User + system CPU seconds from a /proc stat file (utime and stime, after the comm)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_names(pid: int) -> dict[int, str]:
    names = {}
    for comm in Path(f"/proc/{pid}/task").glob("*/comm"):
        try:
            names[int(comm.parent.name)] = comm.read_text().strip()
        except OSError:
            continue
    return names


BATCH_SAMPLES = {"clip_grpc_forward_seconds_sum": "forward_s",
                 "clip_grpc_forward_seconds_count": "batches", "clip_grpc_batch_size_sum": "items"}


async def model_busy_totals(metrics_url: str) -> dict[str, dict[str, float]]:
    """Per modality, from the server's own /metrics: seconds its model thread has spent in
    forward passes, batches and items so far (two readings apart give how busy the model was)."""
    client = AsyncHTTPClient(force_instance=True)
    try:
        body = (await client.fetch(metrics_url, request_timeout=10.0)).body.decode()
    finally:
        client.close()
    return parse_batch_totals(body)


def parse_batch_totals(body: str) -> dict[str, dict[str, float]]:
    totals: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name in BATCH_SAMPLES:
                modality = totals.setdefault(sample.labels["modality"], {})
                modality[BATCH_SAMPLES[sample.name]] = sample.value
    return totals
