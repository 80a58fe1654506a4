"""Lossless shutdown: count the service calls in flight (ClipService, clip-as-service's jina
service; not health or reflection), refuse new ones once closed.

grpc's own `server.stop(grace)` is not enough on its own: it stops matching calls at once, and
calls the server had already received but not yet handed to the application (hundreds, when 200
arrive together on a busy loop) are cancelled. So on SIGTERM the gate closes first (new calls
get UNAVAILABLE, which clients retry elsewhere), the calls already running finish, and only then
is grpc's server stopped, with nothing of ours left in it.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc

REFUSED = "the server is shutting down and takes no new calls; retry on another server"


class CallGate(grpc.aio.ServerInterceptor):
    UNGATED = ("/grpc.health.", "/grpc.reflection.")  # probes and tools keep working

    def __init__(self):
        self.is_open = True
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def close(self) -> None:
        self.is_open = False

    async def wait_idle(self, timeout: float) -> bool:
        """True once no gated call is running; False if some still are after timeout seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @contextlib.contextmanager
    def counting(self):
        """One call running, for as long as the block lasts."""
        self.active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.active -= 1
            if self.active == 0:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def _admitted(self, context):
        """Refuses the call once closed; otherwise counts it as running until it ends."""
        if not self.is_open:
            await context.abort(grpc.StatusCode.UNAVAILABLE, REFUSED)
        with self.counting():
            yield

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(self.UNGATED):
            return handler
        if handler.unary_unary:
            return self._unary(handler)
        if handler.stream_stream:
            return self._stream(handler)
        return handler

    def _unary(self, handler):
        inner = handler.unary_unary

        async def unary(request, context):
            async with self._admitted(context):
                return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary, handler.request_deserializer, handler.response_serializer)

    def _stream(self, handler):
        inner = handler.stream_stream

        async def stream(requests, context):
            async with self._admitted(context):
                async for response in inner(requests, context):
                    yield response

        return grpc.stream_stream_rpc_method_handler(
            stream, handler.request_deserializer, handler.response_serializer)
