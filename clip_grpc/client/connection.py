"""How the client reaches the server: target, TLS, token metadata and channel options."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc

from clip_grpc.v1 import clip_pb2_grpc

SERVICE = "clip_grpc.v1.ClipService"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Connection:
    """Everything needed to open a channel; one channel is opened per event loop."""

    address: str
    tls: bool
    root_certificates: bytes | None
    metadata: tuple[tuple[str, str], ...]
    options: tuple[tuple[str, object], ...]

    @classmethod
    def build(
        cls,
        target: str,
        *,
        tls: bool | None = None,
        root_certificates: bytes | str | os.PathLike | None = None,
        token: str | None = None,
        metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        channel_options: Sequence[tuple[str, object]] = (),
    ) -> Connection:
        """`target` is "host:port", "grpc://host:port" or "grpcs://host:port" (TLS). TLS is also
        on when `tls=True` or `root_certificates` (PEM bytes or a file path) are given; without
        them the system's roots are used. `token` is sent as "authorization: Bearer <token>"."""
        address, scheme_tls = _split_scheme(target)
        use_tls = bool(tls) if tls is not None else scheme_tls or root_certificates is not None
        pairs = list(metadata.items() if isinstance(metadata, Mapping) else metadata or ())
        if token:
            pairs.append(("authorization", f"Bearer {token}"))
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # Reconnect soon after a server restart instead of after grpc's long default backoff.
            ("grpc.initial_reconnect_backoff_ms", int(backoff_s * 1000)),
            ("grpc.min_reconnect_backoff_ms", int(backoff_s * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(max_backoff_s * 1000)),
            ("grpc.service_config", _unary_retry_config(retries, backoff_s, max_backoff_s)),
            *channel_options,
        ]
        return cls(
            address=address,
            tls=use_tls,
            root_certificates=_read_certificates(root_certificates),
            metadata=tuple((key.lower(), value) for key, value in pairs),
            options=tuple(options),
        )

    def open(self) -> tuple[grpc.aio.Channel, clip_pb2_grpc.ClipServiceStub]:
        """A new grpc.aio channel and stub bound to the running event loop."""
        if self.tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=self.root_certificates)
            channel = grpc.aio.secure_channel(self.address, credentials, options=self.options)
        else:
            channel = grpc.aio.insecure_channel(self.address, options=self.options)
        return channel, clip_pb2_grpc.ClipServiceStub(channel)


def _split_scheme(target: str) -> tuple[str, bool]:
    for scheme, tls in (("grpcs://", True), ("grpc://", False)):
        if target.startswith(scheme):
            return target[len(scheme) :], tls
    return target, False


def _read_certificates(source: bytes | str | os.PathLike | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    with open(source, "rb") as file:
        return file.read()


def _unary_retry_config(retries: int, backoff_s: float, max_backoff_s: float) -> str:
    """gRPC's own retries for the unary methods; EmbedStream resumes by itself (see stream.py).
    gRPC allows at most 5 attempts."""
    if retries < 1:
        return json.dumps({})
    policy = {
        "maxAttempts": min(retries + 1, 5),
        "initialBackoff": f"{backoff_s}s",
        "maxBackoff": f"{max_backoff_s}s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    names = [{"service": SERVICE, "method": method} for method in ("Embed", "Rank", "Info")]
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}]})
