"""The server's Prometheus metrics, and `GET /metrics` on their own port.

Each server owns its registry (tests run many servers in one process). The numbers are born where
they happen: the engine reports each item's preprocess and queue seconds and its errors, the
batcher each batch's size and forward seconds, the access-log interceptor each RPC. The gauges an
autoscaler reads (items in flight and queued) are read from the engine at scrape time, so they
cost nothing on the request path.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import __version__
from .errors import StartupError

if TYPE_CHECKING:
    from .engine import Engine
    from .model.loading import LoadedModel

log = logging.getLogger(__name__)
MODALITIES = ("image", "text")
# Seconds, from a tokenised text (~50 us) to a large image's decode or a big CPU batch (~10 s).
SECONDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0, 10.0)


def _batch_buckets(limits: Mapping[str, int]) -> tuple[float, ...]:
    """Powers of two up to each modality's batch limit, and the limits themselves."""
    sizes = set(limits.values())
    for limit in limits.values():
        size = 1
        while size < limit:
            sizes.add(size)
            size *= 2
    return tuple(sorted(sizes))


class _EngineGauges(Collector):
    """Items in flight and queued per modality, read from the engine when scraped."""

    def __init__(self):
        self.engine: Engine | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        in_flight = GaugeMetricFamily(
            "clip_grpc_items_in_flight",
            "Items admitted and not yet answered (preprocessing, queued or in the model)",
            labels=["modality"],
        )
        queued = GaugeMetricFamily(
            "clip_grpc_items_queued",
            "Items preprocessed and waiting for a batch: the autoscaling signal",
            labels=["modality"],
        )
        engine = self.engine
        for modality in MODALITIES:
            in_flight.add_metric([modality], engine.items_in_flight[modality] if engine else 0)
            queued.add_metric([modality], engine.batchers[modality].queued() if engine else 0)
        return [in_flight, queued]


class _ItemSeconds(Collector):
    """A per-item histogram by modality, observed a chunk at a time: the items of one hand-off
    share their seconds, so one observation counts them all (prometheus_client's Histogram
    takes one item per call, two locked increments each, on the event loop)."""

    def __init__(self, name: str, documentation: str):
        self.name, self.documentation = name, documentation
        self._counts = {m: [0] * (len(SECONDS) + 1) for m in MODALITIES}  # the last: > SECONDS
        self._sums = dict.fromkeys(MODALITIES, 0.0)

    def observe(self, modality: str, seconds: float, items: int) -> None:
        # Only the event loop writes; a scrape copies the list whole, under the GIL.
        self._counts[modality][bisect.bisect_left(SECONDS, seconds)] += items
        self._sums[modality] += seconds * items

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["modality"])
        for modality in MODALITIES:
            counts, total = list(self._counts[modality]), self._sums[modality]
            cumulative = list(itertools.accumulate(counts))
            bounds = [*map(floatToGoString, SECONDS), "+Inf"]
            family.add_metric([modality], list(zip(bounds, cumulative, strict=True)), total)
        return [family]


class ServerMetrics:
    def __init__(self, batch_limits: Mapping[str, int] | None = None):
        self.registry = registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        self._gauges = _EngineGauges()
        registry.register(self._gauges)
        self.model_info = Gauge(
            "clip_grpc_model_info", "The model served (always 1; the labels describe it)",
            ["model", "source", "family", "dim", "device", "dtype", "version"], registry=registry,
        )
        self.batch_size: Histogram | None = None  # once the limits are known
        self.batch_buckets: tuple[float, ...] = ()
        self.embedded = Counter(
            "clip_grpc_items_embedded", "Items embedded", ["modality"], registry=registry
        )
        self.item_errors = Counter(
            "clip_grpc_item_errors",
            "Items answered with an error instead of an embedding, by gRPC code (the item alone "
            "failed, or its whole message was refused)",
            ["code"], registry=registry,
        )
        self.rpcs = Counter(
            "clip_grpc_rpcs", "ClipService RPCs finished", ["method", "code"], registry=registry
        )
        self.rpc_seconds = Histogram(
            "clip_grpc_rpc_seconds", "ClipService RPC durations", ["method"],
            buckets=SECONDS, registry=registry,
        )
        self.preprocess_seconds = _ItemSeconds(
            "clip_grpc_preprocess_seconds",
            "Per item: image decode and resize or text tokenising, with any wait for a worker",
        )
        self.queue_seconds = _ItemSeconds(
            "clip_grpc_queue_wait_seconds",
            "Per item: from preprocessed to its batch starting in the model thread",
        )
        registry.register(self.preprocess_seconds)
        registry.register(self.queue_seconds)
        self.forward_seconds = Histogram(
            "clip_grpc_forward_seconds", "Per batch: the forward pass", ["modality"],
            buckets=SECONDS, registry=registry,
        )
        self.serialise_seconds = Histogram(
            "clip_grpc_serialise_seconds",
            "Per response message: protobuf to bytes", ["method"],
            buckets=SECONDS, registry=registry,
        )
        self._batches: dict[str, tuple] = {}
        if batch_limits is not None:
            self.use_batch_limits(batch_limits)

    def use_batch_limits(self, limits: Mapping[str, int]) -> None:
        """The batch-size histogram's buckets follow the batch limits, which depend on the
        device, known only once the model has loaded (config.batch_limits)."""
        buckets = _batch_buckets(limits)
        if self.batch_size is not None:
            if buckets == self.batch_buckets:
                return
            self.registry.unregister(self.batch_size)
        self.batch_buckets = buckets
        self.batch_size = Histogram(
            "clip_grpc_batch_size", "Items per forward pass", ["modality"],
            buckets=buckets, registry=self.registry,
        )
        self._batches = {
            m: (self.batch_size.labels(m), self.forward_seconds.labels(m), self.embedded.labels(m))
            for m in MODALITIES
        }

    # -- called where the numbers are born --------------------------------------------------

    def items_done(self, modality: str, count: int, preprocess_s: float, queue_s: float) -> None:
        """count items of one chunk, which share their preprocess and queue seconds."""
        self.preprocess_seconds.observe(modality, preprocess_s, count)
        self.queue_seconds.observe(modality, queue_s, count)

    def batch_done(self, modality: str, size: int, forward_s: float) -> None:
        sizes, forward, embedded = self._batches[modality]
        sizes.observe(size)
        forward.observe(forward_s)
        embedded.inc(size)

    def item_failed(self, code: str, count: int = 1) -> None:
        self.item_errors.labels(code).inc(count)

    def rpc_done(self, method: str, code: str, seconds: float) -> None:
        self.rpcs.labels(method, code).inc()
        self.rpc_seconds.labels(method).observe(seconds)

    def serialised(self, method: str, seconds: float) -> None:
        self.serialise_seconds.labels(method).observe(seconds)

    def serving(self, engine: Engine, loaded: LoadedModel) -> None:
        self._gauges.engine = engine
        self.model_info.labels(
            loaded.name, loaded.source, loaded.family, str(loaded.embedding_dim),
            str(loaded.device), loaded.dtype_name, __version__,
        ).set(1)


def serve_registry(registry: CollectorRegistry, host: str, port: int):
    """prometheus_client's HTTP server and thread for `registry`, or a StartupError."""
    try:
        return start_http_server(port, host.strip("[]"), registry)
    except OSError as error:
        raise StartupError(
            f"--metrics-port {port}: cannot listen on {host}:{port} "
            f"({error.strerror or error}); choose another port or 0 to turn metrics off"
        ) from error


class MetricsEndpoint:
    """`GET /metrics` (Prometheus text format) on its own port, served from a thread."""

    def __init__(self, metrics: ServerMetrics, host: str, port: int):
        self._server, self._thread = serve_registry(metrics.registry, host, port)
        self.port = self._server.server_port
        log.info("metrics listening", extra={"address": f"{host}:{self.port}", "path": "/metrics"})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
