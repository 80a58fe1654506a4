"""`--workers N`: real supervisor processes with two workers on the tiny CLIP.

Connections, not calls, are spread over the workers (SO_REUSEPORT), so the tests open a new
connection per call (a channel with its own subchannel pool) where they need both workers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from clip_grpc.config import parse_args
from clip_grpc.server import running_server
from clip_grpc.v1 import clip_pb2 as pb
from clip_grpc.v1 import clip_pb2_grpc
from clip_grpc.worker_metrics import merged, worker_families
from tests.conftest import server_config
from tests.server_process import REPO, ServerProcess
from tests.test_drain import embed_request, first_done, outcome
from tests.waiting import until

OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
TEXT = "a photo of a cat"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def worker_pids(server: ServerProcess) -> dict[int, int]:
    """Worker index -> pid of its latest process, from the supervisor's log."""
    return {e["worker"]: e["pid"] for e in server.logs if e.get("msg") == "worker serving"}


def embedded_by_worker(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as page:
        text = page.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "clip_grpc_items_embedded_total":
                worker = sample.labels["worker"]
                counts[worker] = counts.get(worker, 0) + sample.value
    return counts


def embed_text_on_a_new_connection(target: str) -> np.ndarray:
    with grpc.insecure_channel(target, options=OWN_CONNECTION) as channel:
        response = clip_pb2_grpc.ClipServiceStub(channel).Embed(
            pb.EmbedRequest(items=[pb.Item(id="t", text=TEXT)]), timeout=30)
    return np.frombuffer(response.results[0].embedding.packed, dtype="<f4")


@pytest.fixture
def workers(tiny_clip_dir):
    metrics_port = free_port()
    server = ServerProcess(tiny_clip_dir, "--workers", "2", "--port", str(free_port()),
                           "--metrics-port", str(metrics_port), "--grace-seconds", "60",
                           "--preprocess-workers", "2")
    server.metrics_port = metrics_port
    try:
        server.wait_for_log("all workers serving", timeout=120)
        yield server
    finally:
        pids = worker_pids(server).values()
        server.kill()
        asyncio.run(until(lambda: all(gone(pid) for pid in pids)))


async def test_both_workers_serve_the_same_embeddings_and_report_their_metrics(
    workers, tiny_clip_dir, tiny_clip
):
    vectors = []

    def both_served():
        vectors.append(embed_text_on_a_new_connection(workers.target))
        counts = embedded_by_worker(workers.metrics_port)
        return sorted(counts) == ["0", "1"] and all(counts.values())

    await until(lambda: asyncio.to_thread(both_served))
    async with running_server(server_config(tiny_clip_dir), tiny_clip) as single, \
            grpc.aio.insecure_channel(single.target) as channel:  # fmt: skip
        response = await clip_pb2_grpc.ClipServiceStub(channel).Embed(
            pb.EmbedRequest(items=[pb.Item(id="t", text=TEXT)]))
    expected = np.frombuffer(response.results[0].embedding.packed, dtype="<f4")
    for vector in vectors:  # to float32 rounding: each process batched by its own timing
        np.testing.assert_allclose(vector, expected, atol=1e-5)


async def test_sigterm_finishes_every_call_both_workers_accepted(workers):
    channels = [grpc.aio.insecure_channel(workers.target, options=OWN_CONNECTION)
                for _ in range(6)]
    try:
        stubs = [clip_pb2_grpc.ClipServiceStub(channel) for channel in channels]
        calls = [asyncio.ensure_future(stubs[i % 6].Embed(embed_request(i, 400)))
                 for i in range(90)]
        await first_done(calls)
        workers.process.send_signal(signal.SIGTERM)
        finished_before = sum(call.done() for call in calls)
        outcomes = [await outcome(call) for call in calls]
        exit_code = await asyncio.to_thread(workers.process.wait, 90)
    finally:
        for channel in channels:
            await channel.close()
    statuses = [status for status, _ in outcomes]
    assert set(statuses) <= {"OK", "UNAVAILABLE"}, set(statuses)  # never CANCELLED
    assert all("takes no new calls" in d for s, d in outcomes if s != "OK")
    assert statuses.count("OK") > finished_before, "no call was in flight at the signal"
    assert exit_code == 0
    assert all(gone(pid) for pid in worker_pids(workers).values())


async def test_a_killed_worker_is_replaced_and_the_service_goes_on(workers):
    first = worker_pids(workers)
    os.kill(first[0], signal.SIGKILL)
    await until(lambda: worker_pids(workers).get(0) not in (None, first[0]), timeout=120)
    ended = workers.wait_for_log("worker ended (signal SIGKILL): starting another")
    assert ended["worker"] == 0 and ended["pid"] == first[0]
    assert worker_pids(workers)[1] == first[1]  # the other one was left alone
    for _ in range(10):
        assert len(await asyncio.to_thread(embed_text_on_a_new_connection, workers.target))


async def test_workers_end_with_their_supervisor(workers):
    pids = worker_pids(workers).values()
    workers.process.kill()  # SIGKILL: the supervisor cannot tell anyone
    await until(lambda: all(gone(pid) for pid in pids))


def run_server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clip_grpc", "--host", "127.0.0.1", "--device", "cpu",
         "--metrics-port", "0", "--log-format", "text", *args],
        capture_output=True, text=True, timeout=180, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("flag", ["--port", "--health-port", "--metrics-port"])
def test_a_taken_port_stops_the_supervisor_naming_the_flag(tiny_clip_dir, flag):
    ports = {"--port": free_port(), "--health-port": free_port(), "--metrics-port": free_port()}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[flag]))
        taken.listen()
        args = [f"{name}={port}" for name, port in ports.items()]
        result = run_server("--model", str(tiny_clip_dir), "--workers", "2", *args)
    assert result.returncode == 2
    assert f"{flag} {ports[flag]}: cannot listen" in result.stderr
    assert "starting workers" not in result.stderr  # nothing was started


def test_a_worker_that_cannot_load_its_model_stops_everything(tmp_path):
    result = run_server("--model", str(tmp_path), "--workers", "2", "--port", str(free_port()))
    assert result.returncode == 2
    assert "worker did not start" in result.stderr
    assert "all workers serving" not in result.stderr


def test_workers_need_a_fixed_port(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--workers", "2", "--port", "0"])
    assert "--workers above 1 needs a fixed --port" in capsys.readouterr().err


def exposition(embedded: int) -> str:
    registry = CollectorRegistry()
    Counter("clip_grpc_items_embedded", "Items embedded", ["modality"],
            registry=registry).labels("text").inc(embedded)
    return generate_latest(registry).decode()


def test_metrics_of_two_workers_merge_into_one_family_per_name():
    families = merged([*worker_families(exposition(3), 0), *worker_families(exposition(5), 1)])
    counts = {(f.name, s.name, s.labels["worker"]): s.value
              for f in families for s in f.samples if s.name.endswith("_total")}
    assert counts == {("clip_grpc_items_embedded", "clip_grpc_items_embedded_total", "0"): 3,
                      ("clip_grpc_items_embedded", "clip_grpc_items_embedded_total", "1"): 5}
    assert len({f.name for f in families}) == len(families)
    reparsed = text_string_to_metric_families(generate_latest(ListCollector(families)).decode())
    assert {s.labels["worker"] for f in reparsed for s in f.samples} == {"0", "1"}


class ListCollector:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families
