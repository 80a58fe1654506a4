"""One structured log line per ClipService RPC: method, request id, status, messages, latency.

Successful unary calls also carry their server time to the caller, as trailing metadata
`server-timing: total;dur=<ms>` (the W3C Server-Timing syntax), for the client's profile().
"""

from __future__ import annotations

import logging
import time

import grpc

log = logging.getLogger("clip_grpc.access")
REQUEST_ID_KEY = "x-request-id"  # the REST bridge sends its request_id here


def _status(context) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "OK"


class AccessLogInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not details.method.startswith("/clip_grpc."):
            return handler
        method = details.method.rsplit("/", 1)[-1]
        request_id = dict(details.invocation_metadata or ()).get(REQUEST_ID_KEY, "")

        def write(context, started, messages, status=None):
            log.info("rpc", extra={
                "method": method,
                "request_id": request_id,
                "status": status or _status(context),
                "messages": messages,
                "ms": round((time.perf_counter() - started) * 1000, 2),
            })

        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request, context):
                started, status = time.perf_counter(), None
                try:
                    response = await inner(request, context)
                    elapsed_ms = (time.perf_counter() - started) * 1000
                    timing = f"total;dur={elapsed_ms:.3f}"
                    context.set_trailing_metadata((("server-timing", timing),))
                    return response
                except Exception:
                    status = _status(context) if context.code() else "INTERNAL"
                    raise
                finally:
                    write(context, started, 1, status)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer)

        if handler.stream_stream:
            inner_stream = handler.stream_stream

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
                stream, handler.request_deserializer, handler.response_serializer)
        return handler
