"""What every handler shares: the request id, API keys, the bound on requests at once, JSON
answers and errors, gRPC calls, and the request-body limits."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from tornado.ioloop import IOLoop
from tornado.web import HTTPError, RequestHandler, stream_request_body

from clip_grpc.v1 import clip_pb2
from rest_bridge.auth import BridgeAuth
from rest_bridge.backend import ClipBackend
from rest_bridge.config import BridgeConfig
from rest_bridge.drain import Drain
from rest_bridge.limits import RequestLimits, body_timeout, check_image_sizes
from rest_bridge.metrics import BridgeMetrics
from rest_bridge.status_map import (
    RETRYABLE_STATUSES,
    ApiError,
    from_http_status,
    from_rpc_error,
    invalid_argument,
)
from rest_bridge.vectors import dump_json

log = logging.getLogger("rest_bridge")

REQUEST_ID_HEADER = "request_id"
# Seed 002: "request_id, integer (optional)".
REQUEST_ID_PATTERN = re.compile(r"-?[0-9]{1,32}")
# Tornado's own limit is lifted for chunked bodies so that the bridge can answer 413 itself.
_UNLIMITED = 1 << 62


class BaseHandler(RequestHandler):
    # The route label of metrics and logs (the pattern, never the raw path).
    route = "unmatched"
    # Probes set these False: they stay open without an API key and are never refused as
    # over the bound on requests at once.
    needs_api_key = True
    counts_towards_limit = True
    # Probes set this True: they answer for themselves while the bridge is stopping.
    answers_while_draining = False

    def initialize(
        self, config: BridgeConfig, backend: ClipBackend, metrics: BridgeMetrics
    ) -> None:
        self.config = config
        self.backend = backend
        self.metrics = metrics
        # Counted for the log line and the items-embedded metric.
        self.images = 0
        self.texts = 0
        self.error: ApiError | None = None
        self._in_flight = False
        self._holds_slot = False
        self._client_gone = False
        self._grpc_call: Any = None
        # Set by make_app (application settings, so that every handler finds them).
        self.auth: BridgeAuth = self.settings["auth"]
        self.limits: RequestLimits = self.settings["limits"]
        self.drain: Drain = self.settings["drain"]

    # ---- request id -------------------------------------------------------------------
    def set_default_headers(self) -> None:
        # Runs in __init__ and again on every clear() (send_error clears the headers).
        if not hasattr(self, "_request_id"):
            sent = self.request.headers.get(REQUEST_ID_HEADER, "").strip()
            self._request_id_ok = not sent or REQUEST_ID_PATTERN.fullmatch(sent) is not None
            self._request_id = sent if sent and self._request_id_ok else str(uuid.uuid4())
        self.set_header(REQUEST_ID_HEADER, self._request_id)

    @property
    def request_id(self) -> str:
        return self._request_id

    def prepare(self) -> None:
        if self.drain.started and not self.answers_while_draining:
            raise self.drain.refusal()
        if self.needs_api_key and self.auth.api_keys is not None:
            self.auth.api_keys.check(self.request.headers)
        if self.counts_towards_limit:
            if not self.limits.concurrency.try_enter():
                raise self.limits.concurrency.refusal()
            self._holds_slot = True
        self._enter_in_flight()
        if not self._request_id_ok:
            raise invalid_argument("the request_id header must be an integer", REQUEST_ID_HEADER)

    def compute_etag(self) -> None:
        return None  # answers are live data, never cacheable

    # ---- answers ----------------------------------------------------------------------
    def write_json(self, body: dict, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(dump_json(body))

    def answer_error(self, error: ApiError) -> None:
        self.clear()
        # Kept for the access log: without its traceback and chained exceptions, whose frames
        # would keep the request (and its images) alive until the next garbage collection.
        error.__traceback__ = error.__context__ = error.__cause__ = None
        self.error = error
        if error.status_code in RETRYABLE_STATUSES:
            self.set_header("Retry-After", str(self.config.retry_after_s))
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.write_json(self.error_body(error), error.status_code)

    def error_body(self, error: ApiError) -> dict:
        """The JSON body of an error answer; peer protocols answer in their own shape."""
        return error.body()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exception = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exception, ApiError):
            error = exception
        elif isinstance(exception, HTTPError) or exception is None:
            error = from_http_status(status_code, self._reason)
        else:
            error = ApiError(
                500, "INTERNAL", f"internal error in the REST bridge (request_id {self.request_id})"
            )
        self.answer_error(error)

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, HTTPError):
            return  # answered as JSON and counted in the access log; nothing unexpected
        log.error(
            "unexpected error, request_id %s, %s %s",
            self.request_id, self.request.method, self.request.path,
            exc_info=(typ, value, tb),
        )

    def query_flag(self, name: str) -> bool:
        value = self.get_query_argument(name, "false").strip().lower()
        if value in ("1", "true", "yes", ""):
            return True
        if value in ("0", "false", "no"):
            return False
        raise invalid_argument(f"query parameter {name!r} must be true or false", name)

    # ---- gRPC ---------------------------------------------------------------------------
    async def call_grpc(
        self, method: Callable[..., Any], request: Any, timeout_s: float | None = None
    ) -> Any:
        """One unary call with a deadline. Never waits for a server that is down: the
        channel fails fast and reconnects in the background."""
        call = method(
            request,
            timeout=timeout_s or self.config.grpc_timeout_s,
            metadata=(("x-request-id", self.request_id), *self.auth.grpc_metadata()),
            wait_for_ready=False,
        )
        self._grpc_call = call
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED):
                # The details name internal addresses: for the log, not for the client.
                log.warning(
                    "gRPC %s calling %s, request_id %s: %s", error.code().name,
                    self.backend.target, self.request_id, error.details(),
                )
            raise from_rpc_error(error) from None
        except asyncio.CancelledError:
            if self._client_gone:
                raise ApiError(499, "CANCELLED", "the client closed the connection") from None
            raise
        finally:
            self._grpc_call = None

    async def embed(self, request: clip_pb2.EmbedRequest) -> clip_pb2.EmbedResponse:
        """Embed, sending the request serialized. When the caller holds no other reference
        (see ClipFormHandler), the message is freed before gRPC copies the bytes."""
        if self.backend.embed_serialized is None:  # stand-in backends in tests
            return await self.call_grpc(self.backend.clip.Embed, request)
        payload = request.SerializeToString()
        del request
        return await self.call_grpc(self.backend.embed_serialized, payload)

    async def check_image_sizes(self, images: list[tuple[str, int]]) -> None:
        """413 naming the first (field, size) over the image limit, before anything is
        forwarded. Without --max-image-bytes the limit is the server's, from its Info; when
        the server cannot say (it is down), the Embed call that follows will tell."""
        if not images:
            return
        limit = self.limits.images.known()
        if limit is None:
            try:
                info = await self.call_grpc(self.backend.clip.Info, clip_pb2.InfoRequest())
            except ApiError:
                return
            limit = self.limits.images.remember(info.max_image_bytes)
        check_image_sizes(images, limit)

    # ---- bookkeeping --------------------------------------------------------------------
    def _enter_in_flight(self) -> None:
        if not self._in_flight:
            self._in_flight = True
            self.metrics.in_flight.labels(self.route).inc()

    def _leave_in_flight(self) -> None:
        if self._in_flight:
            self._in_flight = False
            self.metrics.in_flight.labels(self.route).dec()
        if self._holds_slot:
            self._holds_slot = False
            self.limits.concurrency.leave()

    def on_finish(self) -> None:
        self._leave_in_flight()

    def on_connection_close(self) -> None:
        # The client has gone: drop its work on the server too.
        self._client_gone = True
        if self._grpc_call is not None:
            self._grpc_call.cancel()
        self._leave_in_flight()
        super().on_connection_close()


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        super().prepare()
        raise ApiError(
            404, "NOT_FOUND", f"no route {self.request.method} {self.request.path}; "
            "see GET /openapi.json",
        )


@stream_request_body
class BodyHandler(BaseHandler):
    """A POST handler that reads its body itself: to answer 413 (JSON, before reading the
    body when Content-Length says it is too large) instead of Tornado's bare 400, to answer 408
    to a client that takes longer than --body-timeout-s to send it, and to hold it once, in
    one buffer that handle() owns (so that it can let go of it as soon as it has been turned
    into the gRPC request)."""

    def prepare(self) -> None:
        super().prepare()
        self._body: bytearray | None = bytearray()
        self._body_timer = IOLoop.current().call_later(
            self.config.body_timeout_s, self._body_timed_out
        )
        length = self.request.headers.get("Content-Length")
        if length is None:
            self.request.connection.set_max_body_size(_UNLIMITED)
        elif length.strip().isdigit() and int(length) > self.config.max_body_bytes:
            raise self._too_large()

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            "PAYLOAD_TOO_LARGE",
            f"the request body is larger than the limit of {self.config.max_body_bytes} bytes",
        )

    def _body_timed_out(self) -> None:
        if not self._finished and self._body is not None:
            # Tornado closes the connection once this answer is written.
            self._body = None
            self.answer_error(body_timeout(self.config.body_timeout_s))

    def _stop_body_timer(self) -> None:
        timer = getattr(self, "_body_timer", None)
        if timer is not None:
            IOLoop.current().remove_timeout(timer)
            self._body_timer = None

    def data_received(self, chunk: bytes) -> None:
        if self._finished or self._body is None:
            return
        if len(self._body) + len(chunk) > self.config.max_body_bytes:
            self._body = None
            self.answer_error(self._too_large())
            return
        self._body += chunk

    async def post(self) -> None:
        self._stop_body_timer()
        if self._finished:
            return
        body, self._body = self._body, None
        # handle() holds the only reference: once it lets go (del body, or parse_json_request
        # emptying it), the body's memory is freed, before the gRPC call.
        await self.handle(body)

    async def handle(self, body: bytearray) -> None:
        raise NotImplementedError

    def on_finish(self) -> None:
        self._stop_body_timer()
        super().on_finish()

    def on_connection_close(self) -> None:
        self._stop_body_timer()
        self._body = None
        super().on_connection_close()
