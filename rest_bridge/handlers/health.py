"""GET /healthz (the bridge is up) and GET /readyz (the gRPC server says SERVING)."""

from __future__ import annotations

from grpc_health.v1 import health_pb2

from rest_bridge.handlers.base import BaseHandler
from rest_bridge.status_map import ApiError

# A readiness probe answers quickly, whatever the deadline of embedding calls.
READY_TIMEOUT_S = 2.0


class ProbeHandler(BaseHandler):
    """Probes stay open without an API key and are never refused by the bound on requests."""

    needs_api_key = False
    counts_towards_limit = False
    answers_while_draining = True


class HealthzHandler(ProbeHandler):
    route = "/healthz"

    def get(self) -> None:
        self.write_json({"status": "ok"})


class ReadyzHandler(ProbeHandler):
    route = "/readyz"

    async def get(self) -> None:
        if self.drain.started:  # the balancer sends no more; the requests in flight finish
            raise ApiError(503, "UNAVAILABLE", "not ready: the REST bridge is shutting down")
        try:
            reply = await self.call_grpc(
                self.backend.health.Check,
                health_pb2.HealthCheckRequest(service=""),
                timeout_s=min(READY_TIMEOUT_S, self.config.grpc_timeout_s),
            )
        except ApiError as error:
            raise ApiError(503, "UNAVAILABLE", f"not ready: {error.message}") from None
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            raise ApiError(
                503, "UNAVAILABLE", f"not ready: the embedding server is {status}"
            )
        self.write_json({"status": "ready"})
