"""The gRPC server: ClipService, health checking and reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from .access_log import AccessLogInterceptor
from .auth import TokenInterceptor, load_tokens
from .config import ServerConfig
from .drain import CallGate
from .engine import Engine
from .errors import StartupError
from .jina_servicer import JinaServicer
from .jina_v1 import jina_pb2_grpc
from .metrics import MetricsEndpoint, ServerMetrics
from .model.loading import LoadedModel, load_model
from .server_options import server_options
from .servicer import ClipServicer
from .tls import ServerTls
from .token_file import TokenSet
from .v1 import clip_pb2, clip_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = clip_pb2.DESCRIPTOR.services_by_name["ClipService"].full_name
HEALTH_NAMES = ("", SERVICE_NAME)


@dataclass
class RunningServer:
    config: ServerConfig
    server: grpc.aio.Server
    port: int
    health: HealthServicer
    servicer: ClipServicer
    metrics: ServerMetrics
    gate: CallGate
    metrics_endpoint: MetricsEndpoint | None = None
    engine: Engine | None = None
    tls: ServerTls | None = None
    tokens: TokenSet | None = None
    health_server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reload_files(self) -> None:
        """SIGHUP: re-read the token file and the TLS files now (they are also re-read by
        themselves within a second or so of changing)."""
        log.info("SIGHUP: re-reading the token file and the TLS files")
        for watched in (self.tokens, self.tls):
            if watched is not None:
                watched.reload()

    async def set_health(self, status: int) -> None:
        for name in HEALTH_NAMES:
            await self.health.set(name, status)

    async def load(self, loaded: LoadedModel | None = None) -> None:
        """Load (unless given) and warm up the model, then report SERVING."""
        started = time.perf_counter()
        if loaded is None:
            loaded = await asyncio.to_thread(
                load_model, self.config.model_path, self.config.device, self.config.dtype
            )
        engine = Engine(loaded, self.config, self.metrics)
        await engine.start()
        self.engine = self.servicer.engine = engine
        self.metrics.serving(engine, loaded)
        await self.set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            extra={
                "model": loaded.name,
                "source": loaded.source,
                "demo_model": self.config.serves_demo_model,
                "family": loaded.family,
                "dim": loaded.embedding_dim,
                "device": str(loaded.device),
                "dtype": loaded.dtype_name,
                "max_image_batch_size": engine.batch_limits["image"],
                "max_text_batch_size": engine.batch_limits["text"],
                "torch_threads": engine.torch_threads,
                "load_seconds": round(time.perf_counter() - started, 2),
            },
        )

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING and UNAVAILABLE for new calls first, so balancers and clients go
        elsewhere; then the calls already accepted finish, up to the grace period. What is still
        queued when it runs out is refused with UNAVAILABLE, never dropped in silence."""
        await self.health.enter_graceful_shutdown()
        self.gate.close()
        grace = self.config.grace_seconds if grace is None else grace
        log.info("draining", extra={"grace_seconds": grace, "calls": self.gate.active})
        # Keep the last part of the grace for telling callers what was not finished.
        margin = min(1.0, grace / 2)
        if not await self.gate.wait_idle(grace - margin) and self.engine:
            log.warning("grace period over: refusing what is left", extra={
                "calls": self.gate.active, "items": self.engine.in_flight})
            self.engine.refuse_remaining()
            await self.gate.wait_idle(margin)
        await self.server.stop(margin)  # only calls that arrived after the gate closed remain
        if self.health_server:
            await self.health_server.stop(0)
        if self.engine:
            await self.engine.close()
        if self.metrics_endpoint:
            await asyncio.to_thread(self.metrics_endpoint.close)
        log.info("stopped")


def _security(config: ServerConfig) -> tuple[ServerTls | None, TokenSet | None]:
    """The TLS files and the token file, read now: a bad one stops startup, naming its flag."""
    try:
        tls = ServerTls(config) if config.tls_cert else None
        tokens = load_tokens(config.auth_token_file) if config.auth_token_file else None
    except ValueError as error:
        raise StartupError(str(error)) from None
    if tokens is not None and tls is None:
        log.warning("--auth-token-file without --tls-cert: tokens travel in plaintext")
    return tls, tokens


def _bind(server: grpc.aio.Server, flag: str, host: str, port: int,
          credentials: grpc.ServerCredentials | None = None) -> int:
    """Listen on host:port (TLS with credentials), or a StartupError naming the flag."""
    address = f"{host}:{port}"
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError:  # grpc's "Failed to bind to address ..."
        raise StartupError(
            f"{flag} {port}: cannot listen on {address} (the port is taken, or the host is not "
            f"an address of this machine); choose another port"
        ) from None


async def _health_only(config: ServerConfig, health: HealthServicer,
                       reuse_port: bool) -> grpc.aio.Server:
    """A plaintext listener with grpc.health.v1 alone (the same statuses as the main port), for
    probes that cannot speak TLS or present a client certificate."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", int(reuse_port))])
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    _bind(server, "--health-port", config.host, config.health_port)
    await server.start()
    return server


async def start_server(config: ServerConfig, *, reuse_port: bool = False,
                       metrics_at: tuple[str, int] | None = None) -> RunningServer:
    """Bind and start the server, NOT_SERVING until load() finishes. A worker of `--workers N`
    shares its ports (`reuse_port`) and serves its metrics at `metrics_at` for the supervisor."""
    tls, tokens = _security(config)
    metrics = ServerMetrics()  # its batch-size buckets come with the engine, once loaded
    endpoint = None
    if metrics_at is None and config.metrics_port:
        metrics_at = (config.host, config.metrics_port)
    if metrics_at:  # first: a taken port fails before anything else started
        endpoint = MetricsEndpoint(metrics, *metrics_at)
    gate = CallGate()
    # In this order: a call refused for its token is logged and counted, and never gated.
    interceptors: list[grpc.aio.ServerInterceptor] = [AccessLogInterceptor(metrics)]
    if tokens is not None:
        interceptors.append(TokenInterceptor(tokens, config.reflection == "auth"))
    interceptors.append(gate)
    server = grpc.aio.server(interceptors=interceptors,
                             options=server_options(config, reuse_port))
    servicer = ClipServicer(None)
    clip_pb2_grpc.add_ClipServiceServicer_to_server(servicer, server)
    # clip-as-service's clients, unchanged (grpc://host:port).
    jina_pb2_grpc.add_JinaRPCServicer_to_server(JinaServicer(servicer), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if config.reflection != "off":
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            server,
        )
    try:
        port = _bind(server, "--port", config.host, config.port,
                     tls.credentials() if tls is not None else None)
        health_server = (await _health_only(config, health, reuse_port)
                         if config.health_port else None)
    except StartupError:
        if endpoint:
            endpoint.close()
        raise
    await server.start()
    running = RunningServer(config, server, port, health, servicer, metrics, gate, endpoint,
                            tls=tls, tokens=tokens, health_server=health_server)
    await running.set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
    log.info("listening", extra={
        "address": f"{config.host}:{port}",
        "tls": "mtls" if tls and tls.client_certificates else "tls" if tls else "off",
        "tokens": tokens is not None, "reflection": config.reflection})
    return running


@contextlib.asynccontextmanager
async def running_server(config: ServerConfig, loaded: LoadedModel | None = None):
    """A started, loaded server for the duration of the block (tests, embedding in apps)."""
    running = await start_server(config)
    try:
        await running.load(loaded)
        yield running
    finally:
        await running.stop(grace=1.0)


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT, then drain gracefully."""
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    running = await start_server(config)
    loop.add_signal_handler(signal.SIGHUP, running.reload_files)
    loading = asyncio.create_task(running.load())
    stopper = asyncio.create_task(stop_requested.wait())
    await asyncio.wait({loading, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if loading.done() and loading.exception() is None:
        await stopper
    else:
        loading.cancel()
    await running.stop()
    error = None if loading.cancelled() else loading.exception()
    if error is not None:
        raise error
