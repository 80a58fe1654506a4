"""The grpc.aio server's channel arguments, built in one place from the config.

- Message size bounds, and no SO_REUSEPORT (a second server on a taken port must fail, not share),
  except between the processes of one `--workers N` server (clip_grpc/workers.py).
- Connection ageing (off by default): after `max_connection_age_s` (gRPC adds +-10% jitter) the
  server sends GOAWAY, so clients reconnect and re-resolve, and new replicas behind a Service or
  a headless DNS name get their share. In-flight calls get `max_connection_age_grace_s` to finish
  (0: as long as they need); the calls a client makes meanwhile go to its new connection.
- Keepalive policy: clients may ping every `min_ping_interval_s` (default 5 s), with or without
  calls in flight, so long idle streams are not cut with GOAWAY `too_many_pings`
  (clip-as-service's client pings every 9.999 s; gRPC's default bound is 5 minutes).
"""

from __future__ import annotations

from .config import ServerConfig


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def server_options(config: ServerConfig, reuse_port: bool = False) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", int(reuse_port)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(config.min_ping_interval_s)),
    ]
    if config.max_connection_age_s:
        options.append(("grpc.max_connection_age_ms", _ms(config.max_connection_age_s)))
        if config.max_connection_age_grace_s:
            options.append(
                ("grpc.max_connection_age_grace_ms", _ms(config.max_connection_age_grace_s))
            )
    return options
