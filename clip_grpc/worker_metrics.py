"""`GET /metrics` of a `--workers N` server: every worker's metrics, each sample labelled
`worker="<index>"`, fetched from the workers' own loopback endpoints at scrape time. Sums over
`worker` give the pod's numbers (deploy/prometheus-adapter sums per pod).
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from .metrics import serve_registry

if TYPE_CHECKING:
    from .workers import Supervisor

log = logging.getLogger(__name__)
SCRAPE_TIMEOUT_S = 5.0


def worker_families(text: str, index: int) -> Iterable[Metric]:
    for family in text_string_to_metric_families(text):
        labelled = Metric(family.name, family.documentation, family.type, family.unit)
        labelled.samples = [
            Sample(s.name, {**s.labels, "worker": str(index)}, s.value, s.timestamp, s.exemplar)
            for s in family.samples
        ]
        yield labelled


def merged(families: Iterable[Metric]) -> list[Metric]:
    """One family per name (the text format allows each name once), samples of all workers."""
    by_name: dict[str, Metric] = {}
    for family in families:
        if family.name in by_name:
            by_name[family.name].samples.extend(family.samples)
        else:
            by_name[family.name] = family
    return list(by_name.values())


class _WorkersCollector(Collector):
    def __init__(self, supervisor: Supervisor):
        self.supervisor = supervisor

    def collect(self) -> Iterable[Metric]:
        families = []
        for worker in list(self.supervisor.workers.values()):
            if not worker.metrics_port:
                continue  # still loading: nothing counted yet
            url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as answer:
                    text = answer.read().decode()
            except OSError as error:  # it is ending or restarting: the next scrape has it
                log.warning("could not read a worker's metrics: %s", error,
                            extra={"worker": worker.index})
                continue
            families.extend(worker_families(text, worker.index))
        return merged(families)


class WorkerMetricsEndpoint:
    def __init__(self, supervisor: Supervisor, host: str, port: int):
        registry = CollectorRegistry()
        registry.register(_WorkersCollector(supervisor))
        Gauge("clip_grpc_workers_serving", "Worker processes serving now", registry=registry
              ).set_function(lambda: sum(w.serving for w in list(supervisor.workers.values())))
        self._server, self._thread = serve_registry(registry, host, port)
        log.info("metrics listening", extra={"address": f"{host}:{port}", "path": "/metrics"})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
