"""Prometheus metrics on --metrics-port, and the per-stage server-timing trailer."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from clip_grpc.client.profile import server_timing
from clip_grpc.engine import Engine, Input
from clip_grpc.errors import InvalidInput, Overloaded, StartupError
from clip_grpc.server import running_server, start_server
from clip_grpc.v1 import clip_pb2 as pb
from clip_grpc.v1 import clip_pb2_grpc
from tests.conftest import image_bytes, server_config
from tests.waiting import until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """GET /metrics -> {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_on_a_real_port_count_what_the_server_did(tiny_clip_dir, tiny_clip):
    port = free_port()
    config = server_config(tiny_clip_dir, metrics_port=port)
    async with running_server(config, loaded=tiny_clip) as server, \
            grpc.aio.insecure_channel(server.target) as channel:  # fmt: skip
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        items = [pb.Item(id="t1", text="a red circle"), pb.Item(id="t2", text="a blue square"),
                 pb.Item(id="i1", image=image_bytes()), pb.Item(id="bad", image=b"not an image")]
        await stub.Embed(pb.EmbedRequest(items=items))

        async def messages():
            for i in range(3):
                yield pb.EmbedStreamRequest(items=[pb.Item(id=str(i), text=f"text {i}")])

        answers = [answer async for answer in stub.EmbedStream(messages())]
        assert len(answers) == 3
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Embed(pb.EmbedRequest())  # no items: INVALID_ARGUMENT
        samples = await asyncio.to_thread(scrape, port)

    assert value(samples, "clip_grpc_items_embedded_total", modality="text") == 5
    assert value(samples, "clip_grpc_items_embedded_total", modality="image") == 1
    assert value(samples, "clip_grpc_item_errors_total", code="INVALID_ARGUMENT") == 1
    assert value(samples, "clip_grpc_rpcs_total", method="Embed", code="OK") == 1
    assert value(samples, "clip_grpc_rpcs_total", method="Embed", code="INVALID_ARGUMENT") == 1
    assert value(samples, "clip_grpc_rpcs_total", method="EmbedStream", code="OK") == 1
    batches = value(samples, "clip_grpc_batch_size_count", modality="text")
    assert 1 <= batches <= 5  # the warm-up batch is not counted
    assert value(samples, "clip_grpc_batch_size_sum", modality="text") == 5
    assert value(samples, "clip_grpc_forward_seconds_count", modality="text") == batches
    assert value(samples, "clip_grpc_preprocess_seconds_count", modality="text") == 5
    assert value(samples, "clip_grpc_queue_wait_seconds_count", modality="image") == 1
    assert value(samples, "clip_grpc_forward_seconds_sum", modality="image") > 0
    assert value(samples, "clip_grpc_serialise_seconds_count", method="EmbedStream") == 3
    assert value(samples, "clip_grpc_serialise_seconds_count", method="Embed") == 1
    for modality in ("image", "text"):  # the autoscaling signal is there, and idle now
        assert ("clip_grpc_items_queued", (("modality", modality),)) in samples
        assert value(samples, "clip_grpc_items_in_flight", modality=modality) == 0
    [model] = [labels for name, labels in samples if name == "clip_grpc_model_info"]
    model = dict(model)
    assert model["family"] == "clip" and model["dim"] == "16" and model["device"] == "cpu"
    assert model["dtype"] == "fp32" and model["version"]
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)


async def test_each_server_counts_only_its_own_work(clip_server, tiny_clip_dir, tiny_clip):
    before = clip_server.metrics.registry.get_sample_value(
        "clip_grpc_items_embedded_total", {"modality": "text"})
    async with running_server(server_config(tiny_clip_dir), loaded=tiny_clip) as other, \
            grpc.aio.insecure_channel(other.target) as channel:  # fmt: skip
        await clip_pb2_grpc.ClipServiceStub(channel).Embed(
            pb.EmbedRequest(items=[pb.Item(id="t", text="only here")]))
        assert other.metrics.registry.get_sample_value(
            "clip_grpc_items_embedded_total", {"modality": "text"}) == 1
    assert clip_server.metrics.registry.get_sample_value(
        "clip_grpc_items_embedded_total", {"modality": "text"}) == before


async def test_in_flight_and_queued_gauges_follow_the_engine(tiny_clip_dir, tiny_clip):
    engine = Engine(tiny_clip, server_config(tiny_clip_dir))
    await engine.start()
    registry = engine.metrics.registry
    engine.metrics.serving(engine, tiny_clip)

    def gauge(name):
        return registry.get_sample_value(name, {"modality": "text"})

    model_busy, release = threading.Event(), threading.Event()
    engine._model_thread.submit(lambda: (model_busy.set(), release.wait(60)))
    try:
        await asyncio.to_thread(model_busy.wait, 60)
        formed = len(engine.text_batcher.batch_sizes)
        first = asyncio.create_task(engine.embed([Input("a", text="first")]))
        # Taken into a batch of its own, waiting for the model (counting the in-flight gauge
        # alone could see it still being tokenised, and the later items could join its batch).
        await until(lambda: len(engine.text_batcher.batch_sizes) > formed)
        assert gauge("clip_grpc_items_in_flight") == 1
        later = [asyncio.create_task(engine.embed([Input(str(i), text=f"later {i}")]))
                 for i in range(2)]
        await until(lambda: gauge("clip_grpc_items_queued") == 2)
        assert gauge("clip_grpc_items_in_flight") == 3
    finally:
        release.set()
    await asyncio.gather(first, *later)
    assert gauge("clip_grpc_items_in_flight") == 0 and gauge("clip_grpc_items_queued") == 0
    await engine.close()


async def test_refused_items_count_as_item_errors(tiny_clip_dir, tiny_clip):
    engine = Engine(tiny_clip, server_config(tiny_clip_dir, max_queue_size=4))
    await engine.start()
    with engine.admit(2), pytest.raises(Overloaded):  # 2 in flight: 3 more do not fit
        await engine.embed([Input(str(i), text="x") for i in range(3)])
    with pytest.raises(InvalidInput):  # more than could ever fit
        await engine.embed([Input(str(i), text="x") for i in range(5)])
    await engine.close()
    errors = engine.metrics.registry.get_sample_value
    assert errors("clip_grpc_item_errors_total", {"code": "RESOURCE_EXHAUSTED"}) == 3
    assert errors("clip_grpc_item_errors_total", {"code": "INVALID_ARGUMENT"}) == 5


async def test_server_timing_breaks_the_server_time_into_stages(clip_server):
    async with grpc.aio.insecure_channel(clip_server.target) as channel:
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        for item in (pb.Item(id="t", text="a red circle"), pb.Item(id="i", image=image_bytes())):
            call = stub.Embed(pb.EmbedRequest(items=[item, item]))
            response = await call
            assert all(r.HasField("embedding") for r in response.results)
            timings = server_timing(await call.trailing_metadata())
            assert set(timings) == {"total", "preprocess", "queue", "forward", "serialise"}
            assert timings["preprocess"] > 0 and timings["forward"] > 0
            assert timings["serialise"] > 0 and timings["queue"] >= 0
            # one item's stages and the serialising follow each other inside the call's time
            stages = timings["preprocess"] + timings["queue"] + timings["forward"]
            assert stages + timings["serialise"] <= timings["total"] + 0.01


async def test_a_taken_metrics_port_is_a_startup_error_naming_the_flag(tiny_clip_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match="--metrics-port"):
            await start_server(server_config(tiny_clip_dir, metrics_port=port))
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "clip_grpc", "--model", str(tiny_clip_dir), "--host",
             "127.0.0.1", "--port", str(free_port()), "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=120,
        )
    assert done.returncode == 2
    errors = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any("--metrics-port" in e["msg"] and e["level"] == "error" for e in errors)


def test_item_histograms_count_a_chunk_of_items_at_once():
    from prometheus_client import generate_latest

    from clip_grpc.metrics import ServerMetrics

    metrics = ServerMetrics()
    metrics.items_done("text", 3, 0.0003, 0.002)  # three items of one hand-off
    metrics.items_done("text", 1, 20.0, 0.0001)  # beyond the last bucket
    metrics.items_done("image", 2, 0.001, 0.001)  # exactly on a bound: counted in it
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
    }

    def get(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    pre = "clip_grpc_preprocess_seconds"
    assert get(f"{pre}_bucket", modality="text", le="0.00025") == 0
    assert get(f"{pre}_bucket", modality="text", le="0.0005") == 3
    assert get(f"{pre}_bucket", modality="text", le="10.0") == 3
    assert get(f"{pre}_bucket", modality="text", le="+Inf") == 4
    assert get(f"{pre}_count", modality="text") == 4
    assert get(f"{pre}_sum", modality="text") == pytest.approx(3 * 0.0003 + 20.0)
    assert get(f"{pre}_bucket", modality="image", le="0.0005") == 0
    assert get(f"{pre}_bucket", modality="image", le="0.001") == 2
    assert get("clip_grpc_queue_wait_seconds_bucket", modality="text", le="0.0001") == 1
    assert get("clip_grpc_queue_wait_seconds_count", modality="text") == 4
