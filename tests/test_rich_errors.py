"""Whole-RPC errors as google.rpc.Status with BadRequest.FieldViolation (grpcio-status), and
UNAVAILABLE "shutting down" once the engine stops taking work."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clip_grpc.server import running_server
from clip_grpc.v1 import clip_pb2 as pb
from clip_grpc.v1 import clip_pb2_grpc
from tests.conftest import server_config
from tests.model_factory import REPO


def call_sync(target: str, method: str, request):
    """One call through the plain (sync) grpc API, as most clients make it; returns the error."""
    with grpc.insecure_channel(target) as channel:
        try:
            getattr(clip_pb2_grpc.ClipServiceStub(channel), method)(request, timeout=60)
        except grpc.RpcError as error:
            return error
    raise AssertionError("the call succeeded")


def field_violations(error) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)  # raises if code or message disagree with the call's
    assert status is not None, "no grpc-status-details-bin trailer"
    violations = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations += [(v.field, v.description) for v in bad_request.field_violations]
    return violations


@pytest.mark.parametrize(("method", "request_", "field"), [
    ("Rank", pb.RankRequest(query=pb.Item(id="q", text="a cat"),
                            candidates=[pb.Item(id="ok", text="a"),
                                        pb.Item(id="broken", image=b"nope")]),
     "candidates[1].image"),
    ("Rank", pb.RankRequest(candidates=[pb.Item(text="a")]), "query"),
    ("Embed", pb.EmbedRequest(), "items"),
])
async def test_input_errors_carry_a_field_violation(clip_server, method, request_, field):
    error = await asyncio.to_thread(call_sync, clip_server.target, method, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    ((violated, description),) = field_violations(error)
    assert violated == field and description == error.details()
    # The older trailer stays for existing users (the REST bridge reads it too).
    assert dict(error.trailing_metadata())["clip-error-field"] == field


async def test_a_draining_server_says_shutting_down(tiny_clip_dir, tiny_clip):
    async with running_server(server_config(tiny_clip_dir), loaded=tiny_clip) as running:
        running.engine.accepting = False  # as after SIGTERM, while in-flight work drains
        error = await asyncio.to_thread(
            call_sync, running.target, "Embed", pb.EmbedRequest(items=[pb.Item(text="a cat")]))
        running.engine.accepting = True
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "the server is shutting down"
    assert rpc_status.from_call(error).message == "the server is shutting down"


async def test_a_node_client_reads_the_field_violation(clip_server):
    import google.rpc

    node = shutil.which("node")
    if node is None or not (REPO / "node_modules" / "protobufjs").is_dir():
        pytest.fail("the Node test needs node and node_modules: run `make test-deps`")
    googleapis = Path(google.rpc.__path__[0]).parent.parent  # holds google/rpc/*.proto
    process = await asyncio.create_subprocess_exec(
        node, str(REPO / "tests" / "node" / "field_violation.js"), clip_server.target,
        str(googleapis), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()
    seen = json.loads(stdout)
    assert seen["code"] == seen["status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    ((violation),) = seen["violations"]
    assert violation["field"] == "candidates[1].image"
    assert violation["description"] == seen["message"] and "broken" in seen["message"]
