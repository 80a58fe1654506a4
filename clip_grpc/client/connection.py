"""How the client reaches the server(s): targets, balancing, TLS, token metadata and channel
options."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc

from clip_grpc.client.targets import Targets, parse_targets
from clip_grpc.v1 import clip_pb2_grpc

SERVICE = "clip_grpc.v1.ClipService"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
LOAD_BALANCING = ("round_robin", "pick_first")


@dataclass(frozen=True)
class Connection:
    """Everything needed to open a channel; one channel is opened per event loop."""

    targets: Targets
    tls: bool
    root_certificates: bytes | None
    certificate_chain: bytes | None
    private_key: bytes | None
    metadata: tuple[tuple[str, str], ...]
    options: tuple[tuple[str, object], ...]

    @classmethod
    def build(
        cls,
        target: str | Sequence[str],
        *,
        tls: bool | None = None,
        root_certificates: bytes | str | os.PathLike | None = None,
        certificate_chain: bytes | str | os.PathLike | None = None,
        private_key: bytes | str | os.PathLike | None = None,
        token: str | None = None,
        metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        retries: int | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        channel_options: Sequence[tuple[str, object]] = (),
        load_balancing: str = "round_robin",
    ) -> Connection:
        """`target`: see `clip_grpc.client.targets.parse_targets` (one target, dns:///, a list).
        TLS is on for grpcs:// targets, `tls=True` or `root_certificates` (PEM bytes or a file
        path); without roots the system's are used. `certificate_chain` and `private_key` (PEM
        bytes or file paths, together) are the client's certificate, for servers that require one
        (mTLS). `token` is sent as "authorization: Bearer <token>". `load_balancing`:
        "round_robin" (each call to the next ready replica) or "pick_first" (one connection)."""
        if load_balancing not in LOAD_BALANCING:
            raise ValueError(f"load_balancing must be one of {LOAD_BALANCING}")
        if (certificate_chain is None) != (private_key is None):
            raise ValueError("certificate_chain and private_key go together")
        targets = parse_targets(target)
        use_tls = bool(tls) if tls is not None else (
            targets.tls or root_certificates is not None or certificate_chain is not None)
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
            # Its own connection, never one shared with the process's other channels to the
            # same target: several connections are how calls reach several server workers.
            ("grpc.use_local_subchannel_pool", 1),
            (
                "grpc.service_config",
                service_config(load_balancing, retries, backoff_s, max_backoff_s),
            ),
        ]
        if targets.authority:  # a list: TLS checks (and :authority names) its first host
            options.append(("grpc.default_authority", targets.authority))
        options.extend(channel_options)
        return cls(
            targets=targets,
            tls=use_tls,
            root_certificates=_read_pem(root_certificates),
            certificate_chain=_read_pem(certificate_chain),
            private_key=_read_pem(private_key),
            metadata=tuple((key.lower(), value) for key, value in pairs),
            options=tuple(options),
        )

    def open(self) -> tuple[grpc.aio.Channel, clip_pb2_grpc.ClipServiceStub]:
        """A new grpc.aio channel and stub bound to the running event loop."""
        address = self.targets.channel_target()
        if self.tls:
            credentials = grpc.ssl_channel_credentials(
                self.root_certificates, self.private_key, self.certificate_chain)
            channel = grpc.aio.secure_channel(address, credentials, options=self.options)
        else:
            channel = grpc.aio.insecure_channel(address, options=self.options)
        return channel, clip_pb2_grpc.ClipServiceStub(channel)


def _read_pem(source: bytes | str | os.PathLike | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    with open(source, "rb") as file:
        return file.read()


def service_config(
    load_balancing: str, retries: int | None, backoff_s: float, max_backoff_s: float
) -> str:
    """The channel's service config: the balancing policy, and gRPC's own retries for the
    unary methods (at most 5 attempts; EmbedStream resumes by itself, see stream.py, and the
    client retries unary calls again within its retry budget)."""
    config: dict = {"loadBalancingConfig": [{load_balancing: {}}]}
    if retries is not None and retries < 1:
        return json.dumps(config)
    policy = {
        "maxAttempts": 5 if retries is None else min(retries + 1, 5),
        "initialBackoff": f"{backoff_s}s",
        "maxBackoff": f"{max_backoff_s}s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    names = [{"service": SERVICE, "method": method} for method in ("Embed", "Rank", "Info")]
    config["methodConfig"] = [{"name": names, "retryPolicy": policy}]
    return json.dumps(config)
