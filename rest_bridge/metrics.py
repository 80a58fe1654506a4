"""The bridge's Prometheus metrics, in a registry of their own (one per application)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "rest_bridge_requests",
            "HTTP requests answered, by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rest_bridge_request_duration_seconds",
            "Time from the request's arrival to its answer, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.items_embedded = Counter(
            "rest_bridge_items_embedded",
            "Images and texts embedded for HTTP clients, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "rest_bridge_requests_in_flight",
            "HTTP requests being handled now, by route",
            ["route"],
            registry=self.registry,
        )

    def in_flight_now(self) -> float:
        return sum(
            sample.value for family in self.in_flight.collect() for sample in family.samples
        )

    def record(
        self, route: str, method: str, status: int, seconds: float, images: int, texts: int
    ) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if images:
            self.items_embedded.labels("image").inc(images)
        if texts:
            self.items_embedded.labels("text").inc(texts)
