"""The image's HEALTHCHECK: healthy when every local service that answers is ready, and at
least one answers.

Whatever the entrypoint's mode, it probes the REST bridge (GET /readyz, which also asks the
gRPC server) and the gRPC server (grpc.health.v1 Check) on this machine, at the ports in
REST_BRIDGE_PORT and CLIP_GRPC_PORT (defaults 8081 and 50051). A port where nothing listens
is a service this mode does not run.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_S = 3.0


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S):
            return True
    except OSError:
        return False


def bridge_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=TIMEOUT_S):
            return True
    except OSError:  # HTTPError (503 while the server loads) and URLError are OSErrors
        return False


def server_ready(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main() -> int:
    # A server on TLS answers plaintext probes on its --health-port, when it has one.
    grpc_port = int(os.environ.get("CLIP_GRPC_HEALTH_PORT", "0")) or int(
        os.environ.get("CLIP_GRPC_PORT", "50051"))
    probes = {
        "REST bridge": (int(os.environ.get("REST_BRIDGE_PORT", "8081")), bridge_ready),
        "gRPC server": (grpc_port, server_ready),
    }
    answering = {name: ready(port) for name, (port, ready) in probes.items() if listening(port)}
    for name, ready in answering.items():
        print(f"{name}: {'ready' if ready else 'not ready'}")
    if not answering:
        print("nothing answers on the REST bridge or gRPC ports")
    return 0 if answering and all(answering.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
