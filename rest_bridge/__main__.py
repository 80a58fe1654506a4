"""`python -m rest_bridge --grpc-target localhost:50051 --port 8081` (console script
`rest-bridge`)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from clip_grpc.logs import setup_logging
from rest_bridge.app import make_app, make_http_server
from rest_bridge.backend import ClipBackend, open_channels
from rest_bridge.config import BridgeConfig, parse_config
from rest_bridge.drain import wait_idle

log = logging.getLogger("rest_bridge")


async def serve(config: BridgeConfig) -> None:
    channels = open_channels(config)
    app = make_app(config, ClipBackend.from_channels(channels, config.grpc_target))
    server = make_http_server(app, config)
    server.listen(config.port, config.host)
    log.info(
        "REST bridge on %s://%s:%d%s -> gRPC %s (%s)", "https" if config.https else "http",
        config.host, config.port, " (client certificates required)" if config.tls_client_ca
        else "", config.grpc_target, "TLS" if config.use_tls else "plaintext",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    def reload_files() -> None:
        log.info("SIGHUP: re-reading the API keys, the gRPC token and the TLS certificates")
        app.settings["auth"].reload()
        server.reload_tls()

    loop.add_signal_handler(signal.SIGHUP, reload_files)
    await stop.wait()

    log.info(
        "stopping: no new connections or requests, /readyz 503; draining %d requests in "
        "flight for up to %g s", app.metrics.in_flight_now(), config.grace_seconds,
    )
    server.stop()
    app.settings["drain"].start()
    if not await wait_idle(app.metrics.in_flight_now, config.grace_seconds):
        log.warning(
            "grace period over: closing %d requests still in flight", app.metrics.in_flight_now()
        )
    await server.close_all_connections()
    for channel in channels:
        await channel.close()
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(argv)
    setup_logging(config.log_level, config.log_format)  # the server's formatter
    try:
        asyncio.run(serve(config))
    except (OSError, ValueError) as error:  # unreadable key, token or certificate files
        log.error("cannot start: %s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
