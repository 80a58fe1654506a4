"""The bridge's configuration: one frozen dataclass, built once from flags and REST_BRIDGE_* env."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence

ENV_PREFIX = "REST_BRIDGE_"
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class BridgeConfig:
    grpc_target: str = "localhost:50051"
    host: str = "0.0.0.0"
    port: int = 8081
    # Deadline of every gRPC call made for an HTTP request.
    grpc_timeout_s: float = 30.0
    # Cap on the channel's reconnect backoff, so the bridge notices a restarted server quickly.
    grpc_max_reconnect_backoff_ms: int = 2000
    grpc_tls: bool = False
    # PEM file of the root certificates that sign the server's certificate (implies TLS).
    grpc_root_cert: str | None = None
    # Expected name in the server's certificate, when it differs from the target's host.
    grpc_tls_server_name: str | None = None
    max_body_bytes: int = 50 * MIB
    max_form_fields: int = 256
    # Seconds suggested in Retry-After on 429 and 503 answers.
    retry_after_s: int = 1
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if not self.grpc_target:
            raise ValueError("grpc_target must not be empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.grpc_timeout_s <= 0:
            raise ValueError(f"grpc_timeout_s must be positive, got {self.grpc_timeout_s}")
        if self.grpc_max_reconnect_backoff_ms < 100:
            raise ValueError("grpc_max_reconnect_backoff_ms must be at least 100")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {self.max_body_bytes}")
        if self.max_form_fields < 1:
            raise ValueError(f"max_form_fields must be positive, got {self.max_form_fields}")
        if self.retry_after_s < 0:
            raise ValueError(f"retry_after_s must be >= 0, got {self.retry_after_s}")

    @property
    def use_tls(self) -> bool:
        return self.grpc_tls or self.grpc_root_cert is not None


def _env_flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value!r}")


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    defaults = BridgeConfig()
    parser = argparse.ArgumentParser(
        prog="rest-bridge",
        description="HTTP/JSON bridge to a clip_grpc server. Every flag can also be set "
        f"with an environment variable {ENV_PREFIX}<FLAG> (e.g. {ENV_PREFIX}GRPC_TARGET).",
    )

    def option(flag: str, type_, help_: str, **kwargs) -> None:
        name = flag.removeprefix("--").replace("-", "_")
        env_name = ENV_PREFIX + name.upper()
        default = environ.get(env_name, getattr(defaults, name))
        parser.add_argument(
            flag, type=type_, default=default, help=f"{help_} [env {env_name}; %(default)s]",
            **kwargs,
        )

    option("--grpc-target", str, "host:port of the clip_grpc server")
    option("--host", str, "address to listen on")
    option("--port", int, "HTTP port")
    option("--grpc-timeout-s", float, "deadline of each gRPC call, seconds")
    option("--grpc-max-reconnect-backoff-ms", int, "longest wait between reconnect attempts")
    option(
        "--grpc-tls", _env_flag, "use TLS towards the server", nargs="?", const=True,
        metavar="BOOL",
    )
    option("--grpc-root-cert", str, "PEM root certificates for the server (implies TLS)")
    option("--grpc-tls-server-name", str, "name to check in the server's certificate")
    option("--max-body-bytes", int, "largest accepted request body (413 above)")
    option("--max-form-fields", int, "most fields in one multipart form")
    option("--retry-after-s", int, "Retry-After seconds on 429/503")
    option("--log-level", str, "DEBUG, INFO, WARNING or ERROR")
    return parser


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> BridgeConfig:
    """Flags first, then REST_BRIDGE_* environment variables, then the defaults."""
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    values = vars(args)
    for key in ("grpc_root_cert", "grpc_tls_server_name"):
        values[key] = values[key] or None
    values["log_level"] = values["log_level"].upper()
    try:
        return BridgeConfig(**values)
    except ValueError as error:
        parser.error(str(error))
        raise  # parser.error exits; this keeps type checkers content
