"""What every handler shares: the request id, JSON answers and errors, gRPC calls, and the
request-body limit."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from tornado.web import HTTPError, RequestHandler, stream_request_body

from rest_bridge.backend import ClipBackend
from rest_bridge.config import BridgeConfig
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
        self._client_gone = False
        self._grpc_call: Any = None

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
        self.error = error
        if error.status_code in RETRYABLE_STATUSES:
            self.set_header("Retry-After", str(self.config.retry_after_s))
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
            metadata=(("x-request-id", self.request_id),),
            wait_for_ready=False,
        )
        self._grpc_call = call
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, self.backend.target) from None
        except asyncio.CancelledError:
            if self._client_gone:
                raise ApiError(499, "CANCELLED", "the client closed the connection") from None
            raise
        finally:
            self._grpc_call = None

    # ---- bookkeeping --------------------------------------------------------------------
    def _enter_in_flight(self) -> None:
        if not self._in_flight:
            self._in_flight = True
            self.metrics.in_flight.labels(self.route).inc()

    def _leave_in_flight(self) -> None:
        if self._in_flight:
            self._in_flight = False
            self.metrics.in_flight.labels(self.route).dec()

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
    """A POST handler that reads its body itself, to answer 413 (JSON, before reading the
    body when Content-Length says it is too large) instead of Tornado's bare 400."""

    def prepare(self) -> None:
        super().prepare()
        self._chunks: list[bytes] = []
        self._received = 0
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

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._received += len(chunk)
        if self._received > self.config.max_body_bytes:
            self._chunks.clear()
            self.answer_error(self._too_large())
            return
        self._chunks.append(chunk)

    async def post(self) -> None:
        if self._finished:
            return
        body = b"".join(self._chunks)
        self._chunks.clear()
        await self.handle(body)

    async def handle(self, body: bytes) -> None:
        raise NotImplementedError
