"""One structured log line and one metrics update per ClipService RPC.

Successful unary calls also carry their server time to the caller, as trailing metadata
`server-timing: total;dur=<ms>, preprocess;dur=<ms>, ...` (the W3C Server-Timing syntax; the
stages are described in `clip_grpc.stages`), for the client's profile(). Unary responses are
serialised here, so that the serialise stage is measured and still reaches the trailer.
"""

from __future__ import annotations

import logging
import time

import grpc

from . import stages
from .metrics import ServerMetrics

log = logging.getLogger("clip_grpc.access")
REQUEST_ID_KEY = "x-request-id"  # the REST bridge sends its request_id here


def _status(context) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "OK"


def _already_serialised(data: bytes) -> bytes:
    return data


class AccessLogInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: ServerMetrics | None = None):
        self.metrics = metrics or ServerMetrics()

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not details.method.startswith("/clip_grpc."):
            return handler
        method = details.method.rsplit("/", 1)[-1]
        request_id = dict(details.invocation_metadata or ()).get(REQUEST_ID_KEY, "")

        metrics = self.metrics

        def write(context, started, messages, status=None):
            seconds = time.perf_counter() - started
            status = status or _status(context)
            metrics.rpc_done(method, status, seconds)
            log.info("rpc", extra={
                "method": method,
                "request_id": request_id,
                "status": status,
                "messages": messages,
                "ms": round(seconds * 1000, 2),
            })

        if handler.unary_unary:
            inner, serialise = handler.unary_unary, handler.response_serializer

            async def unary(request, context):
                started, status = time.perf_counter(), None
                call_times = stages.StageTimes()
                token = stages.current.set(call_times)  # seen by the tasks this RPC starts
                try:
                    response = await inner(request, context)
                    serialising = time.perf_counter()
                    data = serialise(response)
                    finished = time.perf_counter()
                    call_times.serialise = finished - serialising
                    metrics.serialised(method, call_times.serialise)
                    header = call_times.header(finished - started)
                    context.set_trailing_metadata((("server-timing", header),))
                    return data
                except Exception:
                    status = _status(context) if context.code() else "INTERNAL"
                    raise
                finally:
                    stages.current.reset(token)
                    write(context, started, 1, status)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, _already_serialised)

        if handler.stream_stream:
            inner_stream, serialise_message = handler.stream_stream, handler.response_serializer

            def timed_serialise(response):
                serialising = time.perf_counter()
                data = serialise_message(response)
                metrics.serialised(method, time.perf_counter() - serialising)
                return data

            async def stream(requests, context):
                started, answered, status = time.perf_counter(), 0, None
                try:
                    async for response in inner_stream(requests, context):
                        answered += 1
                        yield response
                except BaseException:
                    status = _status(context) if context.code() else "CANCELLED"
                    raise
                finally:
                    write(context, started, answered, status)

            return grpc.stream_stream_rpc_method_handler(
                stream, handler.request_deserializer, timed_serialise)
        return handler
