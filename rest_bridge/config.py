"""The bridge's configuration: one frozen dataclass, built once from flags and REST_BRIDGE_* env.

Each setting is declared once below; `clip_grpc.settings` (shared with the server) turns the
declarations into flags, environment variables, --help and checks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from clip_grpc.client.targets import parse_targets
from clip_grpc.settings import check_settings, parse_settings, setting

ENV_PREFIX = "REST_BRIDGE_"
MIB = 1024 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")


@dataclasses.dataclass(frozen=True)
class BridgeConfig:
    grpc_target: str = setting(
        "localhost:50051", "the clip_grpc server: host:port, dns:///name:port (every address "
        "the name resolves to) or replicas as host1:port,host2:port; calls go round_robin")
    host: str = setting("0.0.0.0", "address to listen on")
    port: int = setting(8081, "HTTP port (0 picks a free one)", minimum=0, maximum=65535)
    grpc_connections: int = setting(
        4, "HTTP/2 connections to each server, calls taking them in turn (a server run with "
        "--workers spreads connections, not calls, over its processes)", minimum=1)
    grpc_timeout_s: float = setting(30.0, "deadline of each gRPC call, seconds", minimum=0.001)
    # A cap on the channel's reconnect backoff, so the bridge notices a restarted server quickly.
    grpc_max_reconnect_backoff_ms: int = setting(
        2000, "longest wait between reconnect attempts, ms", minimum=100)
    grpc_tls: bool = setting(False, "use TLS towards the server (system roots)")
    grpc_root_cert: str | None = setting(
        None, "PEM file of the roots that sign the server's certificate (implies TLS)")
    grpc_client_cert: str | None = setting(
        None, "PEM certificate chain the bridge presents to a server that requires client "
        "certificates (mTLS; implies TLS)")
    grpc_client_key: str | None = setting(None, "PEM private key of --grpc-client-cert")
    grpc_tls_server_name: str | None = setting(
        None, "name expected in the server's certificate, when it differs from the target's")
    max_body_bytes: int = setting(50 * MIB, "largest accepted request body (413 above)",
                                  minimum=1)
    max_form_fields: int = setting(256, "most fields in one multipart form", minimum=1)
    retry_after_s: int = setting(1, "Retry-After seconds on 429 and 503 answers", minimum=0)
    log_level: str = setting("INFO", "least severe level logged", choices=LOG_LEVELS,
                             parse=str.upper)
    log_format: str = setting("json", "json: one object per line; text: for humans",
                              choices=LOG_FORMATS)
    # Issue 9 (hardening). Memory is bounded by about max_concurrent_requests x 2 x
    # max_body_bytes.
    grace_seconds: float = setting(
        30.0, "how long SIGTERM waits for requests in flight before closing their connections",
        minimum=0)
    max_concurrent_requests: int = setting(
        64, "requests handled at once (probes excluded); 429 beyond", minimum=1)
    body_timeout_s: float = setting(
        60.0, "seconds from the end of the headers to the end of the body; 408 after",
        minimum=0.001)
    idle_timeout_s: float = setting(
        60.0, "seconds a connection may sit idle, or take to send its headers; closed after",
        minimum=0.001)
    max_header_bytes: int = setting(
        64 * 1024, "largest request head (start line and headers); 431 above", minimum=1024)
    max_image_bytes: int = setting(
        0, "largest image forwarded (413 above); 0: the server's limit, from its Info",
        minimum=0)
    tls_cert: str | None = setting(
        None, "PEM certificate chain: serve HTTPS (re-read on SIGHUP or when it changes)")
    tls_key: str | None = setting(None, "PEM private key of --tls-cert")
    tls_client_ca: str | None = setting(
        None, "PEM CA certificates: require client certificates signed by them (mTLS)")
    api_key_file: str | None = setting(
        None, "file of API keys, one per line: every route but /healthz and /readyz needs one "
        "(401 otherwise); re-read on SIGHUP or when it changes")
    metrics_auth: bool = setting(True, "whether /metrics needs an API key (with --api-key-file)")
    grpc_auth_token_file: str | None = setting(
        None, "file holding the bridge's token towards the server, sent as "
        "'authorization: Bearer <token>'; re-read on SIGHUP or when it changes")

    def __post_init__(self) -> None:
        if not self.grpc_target:
            raise ValueError("grpc_target must not be empty")
        parse_targets(self.grpc_target)  # a malformed list fails here, naming the target
        check_settings(self)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        if (self.grpc_client_cert is None) != (self.grpc_client_key is None):
            raise ValueError("--grpc-client-cert and --grpc-client-key go together")

    @property
    def use_tls(self) -> bool:
        return (self.grpc_tls or self.grpc_root_cert is not None
                or self.grpc_client_cert is not None)

    @property
    def https(self) -> bool:
        return self.tls_cert is not None


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> BridgeConfig:
    """Flags first, then REST_BRIDGE_* environment variables, then the defaults."""
    return parse_settings(
        BridgeConfig, argv, environ, prog="rest-bridge",
        description="HTTP/JSON bridge to a clip_grpc server.", env_prefix=ENV_PREFIX,
    )
