"""GET /metrics: Prometheus text format."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rest_bridge.handlers.base import BaseHandler


class MetricsHandler(BaseHandler):
    route = "/metrics"
    counts_towards_limit = False

    @property
    def needs_api_key(self) -> bool:  # --metrics-auth
        return self.auth.metrics_need_key

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.metrics.registry))
