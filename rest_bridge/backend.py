"""The bridge's gRPC channels to the server (one target, dns:///, or a list of replicas,
balanced round_robin), `--grpc-connections` of them, and the stubs that use them in turn."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2_grpc

from clip_grpc.client.connection import SERVICE
from clip_grpc.client.targets import parse_targets
from clip_grpc.v1 import clip_pb2, clip_pb2_grpc
from rest_bridge.config import MIB, BridgeConfig

# Room for the largest embeddings answer: far more than max_form_fields vectors.
MAX_RECEIVE_BYTES = 64 * MIB
# The first reconnect attempts come fast; later ones back off up to the configured cap.
INITIAL_RECONNECT_BACKOFF_MS = 200
# Each call goes to the next ready replica; one that fails UNAVAILABLE (its replica died or is
# draining) is tried again on another before the HTTP client sees a 503.
SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{"service": SERVICE}],
        "retryPolicy": {
            "maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
})  # fmt: skip


def channel_options(config: BridgeConfig) -> list[tuple[str, int | str]]:
    options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        # A request carries at most one HTTP body, plus a little framing.
        ("grpc.max_send_message_length", config.max_body_bytes + MIB),
        ("grpc.initial_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
        ("grpc.min_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", config.grpc_max_reconnect_backoff_ms),
        ("grpc.service_config", SERVICE_CONFIG),
        # Each channel its own connection (channels to one target otherwise share one).
        ("grpc.use_local_subchannel_pool", 1),
    ]
    authority = parse_targets(config.grpc_target).authority
    if authority:  # a list of replicas: TLS checks (and :authority names) its first host
        options.append(("grpc.default_authority", authority))
    if config.grpc_tls_server_name:
        options.append(("grpc.ssl_target_name_override", config.grpc_tls_server_name))
    return options


def open_channels(config: BridgeConfig) -> list[grpc.aio.Channel]:
    return [open_channel(config) for _ in range(config.grpc_connections)]


def open_channel(config: BridgeConfig) -> grpc.aio.Channel:
    """Opens a channel lazily: it connects on the first call and reconnects by itself."""
    options = channel_options(config)
    targets = parse_targets(config.grpc_target)
    address = targets.channel_target()
    if not (config.use_tls or targets.tls):
        return grpc.aio.insecure_channel(address, options=options)
    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    credentials = grpc.ssl_channel_credentials(
        read(config.grpc_root_cert), read(config.grpc_client_key), read(config.grpc_client_cert))
    return grpc.aio.secure_channel(address, credentials, options=options)


@dataclasses.dataclass(frozen=True)
class ClipBackend:
    """What the handlers need of the server: the service stub and the health stub."""

    target: str
    clip: clip_pb2_grpc.ClipServiceStub
    health: health_pb2_grpc.HealthStub
    # Embed on an EmbedRequest serialized already: the bridge lets go of the message before
    # gRPC copies the bytes into its own buffers (message, bytes and copy are never all held).
    embed_serialized: Callable | None = None

    @classmethod
    def from_channels(cls, channels: list[grpc.aio.Channel], target: str) -> ClipBackend:
        return cls(
            target=target,
            clip=InTurn([clip_pb2_grpc.ClipServiceStub(channel) for channel in channels]),
            health=health_pb2_grpc.HealthStub(channels[0]),
            embed_serialized=InTurn([channel.unary_unary(
                "/clip_grpc.v1.ClipService/Embed",
                request_serializer=None,
                response_deserializer=clip_pb2.EmbedResponse.FromString,
            ) for channel in channels]),
        )


class InTurn:
    """Stands for several stubs (or methods), one per connection: each use takes the next."""

    def __init__(self, targets: list):
        self._turn = itertools.cycle(targets)

    def __getattr__(self, name: str):
        return getattr(next(self._turn), name)

    def __call__(self, *args, **kwargs):
        return next(self._turn)(*args, **kwargs)
