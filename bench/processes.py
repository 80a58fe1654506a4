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
        """User + system CPU time so far of the process and its children (a server's
        `--workers`), all their threads."""
        return sum(stat_cpu_seconds(Path(f"/proc/{pid}/stat")) for pid in self.pids())

    def thread_cpu_seconds(self) -> dict[int, float]:
        """By thread id (unique across processes), over the process and its children."""
        return {tid: cpu for pid in self.pids() for tid, cpu in thread_cpu_seconds(pid).items()}

    def thread_names(self) -> dict[int, str]:
        """Thread names; a child's prefixed with its main thread's ("clip-worker-1/model-0":
        the workers of a --workers server name themselves)."""
        names = thread_names(self.process.pid)
        for pid in self.pids()[1:]:
            own = thread_names(pid)
            main = own.get(pid, str(pid))
            names.update({tid: f"{main}/{name}" for tid, name in own.items()})
        return names

    def pids(self) -> list[int]:
        """The process, then its children (one level: a supervisor's workers; multiprocessing's
        resource tracker too, which costs nothing)."""
        pid = self.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        return [pid, *map(int, children)]

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
    workers = int(server_flags[server_flags.index("--workers") + 1]
                  ) if "--workers" in server_flags else 1
    try:
        await child.wait_until(lambda: grpc_serving(target), timeout_s=600)
        if workers > 1:  # the first worker serving is not all of them
            await child.wait_until(lambda: workers_serving(child.metrics_url, workers), 600)
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
    return parse_batch_totals(await metrics_text(metrics_url))


async def metrics_text(metrics_url: str) -> str:
    client = AsyncHTTPClient(force_instance=True)
    try:
        body = (await client.fetch(metrics_url, request_timeout=10.0)).body.decode()
    finally:
        client.close()
    return body


async def embedded_by_worker(metrics_url: str) -> dict[str, float]:
    """Items each worker has embedded so far ("0" alone for a single-process server)."""
    body = await metrics_text(metrics_url)
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "clip_grpc_items_embedded_total":
                worker = sample.labels.get("worker", "0")
                counts[worker] = counts.get(worker, 0.0) + sample.value
    return counts


async def workers_serving(metrics_url: str, workers: int) -> bool:
    """Whether a --workers server's supervisor counts all its workers serving."""
    client = AsyncHTTPClient(force_instance=True)
    try:
        body = (await client.fetch(metrics_url, raise_error=False, request_timeout=5.0)).body
    except OSError:
        return False
    finally:
        client.close()
    return f"clip_grpc_workers_serving {float(workers)}" in body.decode()


def parse_batch_totals(body: str) -> dict[str, dict[str, float]]:
    totals: dict[str, dict[str, float]] = {}
    workers: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name in BATCH_SAMPLES:
                # Summed over a --workers server's `worker` labels.
                modality = totals.setdefault(sample.labels["modality"], {})
                key = BATCH_SAMPLES[sample.name]
                modality[key] = modality.get(key, 0.0) + sample.value
                workers.setdefault(sample.labels["modality"], set()).add(
                    sample.labels.get("worker", "0"))
    for modality, labels in workers.items():
        totals[modality]["workers"] = len(labels)
    return totals
