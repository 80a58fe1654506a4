"""`python -m rest_bridge` as a child process against a stand-in gRPC server, for the tests
that measure the bridge alone (its memory) or drive its signals (SIGHUP)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.testing import bind_unused_port

from clip_grpc.v1 import clip_pb2, clip_pb2_grpc
from tests.waiting import until

MIB = 1024 * 1024
STARTUP_S = 120  # a loaded CI machine takes long to import grpc and tornado


def free_port() -> int:
    sock, port = bind_unused_port()
    sock.close()
    return port


class StandInClip(clip_pb2_grpc.ClipServiceServicer):
    """Answers every item with a per-item error, quickly: what the bridge holds is all that
    is measured. Records the name and the metadata of each call."""

    def __init__(self, max_image_bytes: int = 20 * MIB):
        self.max_image_bytes = max_image_bytes
        self.calls: list[str] = []
        self.metadata: list[dict] = []

    def _record(self, name, context) -> None:
        self.calls.append(name)
        self.metadata.append(dict(context.invocation_metadata()))

    async def Embed(self, request, context):
        self._record("Embed", context)
        response = clip_pb2.EmbedResponse()
        for item in request.items:
            response.results.add(id=item.id, error=clip_pb2.ItemError(
                code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="not an image",
                field="image"))
        return response

    async def Info(self, request, context):
        self._record("Info", context)
        return clip_pb2.InfoResponse(model_name="stand-in", embedding_dim=4,
                                     max_image_bytes=self.max_image_bytes)


@contextlib.asynccontextmanager
async def stand_in_server(servicer: StandInClip | None = None):
    servicer = servicer or StandInClip()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 128 * MIB)])
    clip_pb2_grpc.add_ClipServiceServicer_to_server(servicer, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(None)


class BridgeProcess:
    def __init__(self, process: asyncio.subprocess.Process, base_url: str):
        self.process = process
        self.base_url = base_url
        self.port = int(base_url.rsplit(":", 1)[1])
        self.log_lines: list[str] = []  # its stderr: read by wait_log, the rest once it exits

    def rss_bytes(self, field: str = "VmRSS") -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise LookupError(field)

    async def wait_up(self, ssl_options=None) -> None:
        """Until /healthz answers; RuntimeError if the bridge exits first."""
        client = AsyncHTTPClient(force_instance=True)

        async def answers() -> bool:
            try:
                await client.fetch(self.base_url + "/healthz", ssl_options=ssl_options,
                                   request_timeout=10)
                return True
            except (OSError, HTTPClientError):
                if self.process.returncode is not None:
                    raise RuntimeError("the bridge exited") from None
                return False

        try:
            await until(answers, STARTUP_S, every=0.1)
        finally:
            client.close()

    async def wait_log(self, words: str) -> str:
        """The first line of its log (read as it comes) that holds words."""
        async def line_with_words():
            while line := (await self.process.stderr.readline()).decode():
                self.log_lines.append(line.rstrip("\n"))
                if words in line:
                    return line
            raise AssertionError(f"the bridge exited without logging {words!r}")

        return await asyncio.wait_for(line_with_words(), STARTUP_S)


@contextlib.asynccontextmanager
async def bridge_process(grpc_target: str | None, *flags: str, scheme: str = "http",
                         ssl_options=None, env: dict[str, str] | None = None):
    """The bridge CLI on a free port; ready once /healthz answers. SIGTERM when done. Without
    grpc_target no --grpc-target flag is given (set REST_BRIDGE_GRPC_TARGET in env)."""
    port = free_port()
    target = ["--grpc-target", grpc_target] if grpc_target is not None else []
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rest_bridge", *target,
        "--host", "127.0.0.1", "--port", str(port), *flags,
        env={**os.environ, **(env or {})}, stderr=asyncio.subprocess.PIPE,
    )
    bridge = BridgeProcess(process, f"{scheme}://127.0.0.1:{port}")
    try:
        await bridge.wait_up(ssl_options)
        yield bridge
    finally:
        if process.returncode is None:
            process.terminate()
        _, rest = await asyncio.wait_for(process.communicate(), STARTUP_S)
        bridge.log_lines.extend(rest.decode().splitlines())
