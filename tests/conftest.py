"""Shared fixtures: tiny random models on disk, and a real gRPC server on port 0."""

from __future__ import annotations

import os

# As `python -m clip_grpc` does (see clip_grpc/__main__.py): torch's idle OpenMP workers must
# sleep, not spin, or they starve the event loop and preprocessing threads of the 2 cores.
# libgomp reads this once, when torch loads, so it is set before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Servers the tests start (in process or as `python -m clip_grpc` children) leave the metrics
# port off unless a test asks for it: many run at once, and 9090 may be taken on this machine.
os.environ.setdefault("CLIP_GRPC_METRICS_PORT", "0")

import contextlib  # noqa: E402
import io  # noqa: E402

import grpc
import pytest
from PIL import Image

from clip_grpc.config import ServerConfig
from clip_grpc.engine import Engine
from clip_grpc.model.loading import load_model
from clip_grpc.server import running_server
from clip_grpc.v1 import clip_pb2_grpc
from tests.model_factory import save_clip, save_siglip
from tests.rest_helpers import running_bridge


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    return save_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory):
    return save_siglip(tmp_path_factory.mktemp("tiny-siglip"))


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_dir):
    """The tiny CLIP, loaded once (fp32, CPU)."""
    return load_model(tiny_clip_dir, device="cpu", dtype="fp32")


def server_config(model_dir, **overrides) -> ServerConfig:
    settings = dict(model=str(model_dir), host="127.0.0.1", port=0, device="cpu", dtype="fp32",
                    preprocess_workers=2, grace_seconds=1.0, metrics_port=0)
    settings.update(overrides)
    return ServerConfig(**settings)


@pytest.fixture(scope="session")
async def clip_server(tiny_clip_dir, tiny_clip):
    """A real grpc.aio server on the tiny CLIP; `.target` is "127.0.0.1:PORT"."""
    async with running_server(server_config(tiny_clip_dir), loaded=tiny_clip) as running:
        yield running


@pytest.fixture(scope="module")
async def bridge(clip_server):
    """A REST bridge in this event loop in front of clip_server (tests.rest_helpers.Bridge)."""
    async with running_bridge(clip_server.target) as running:
        yield running


@pytest.fixture(scope="module")
async def stub(clip_server):
    """A ClipService stub on clip_server, to compare the bridge's answers with the server's."""
    async with grpc.aio.insecure_channel(clip_server.target) as channel:
        yield clip_pb2_grpc.ClipServiceStub(channel)


@contextlib.asynccontextmanager
async def started_engine(loaded, config: ServerConfig):
    """An Engine on a loaded model, started (warmed up) for the block and closed after it."""
    engine = Engine(loaded, config)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


def image_bytes(color=(200, 30, 30), size=(40, 30), fmt="PNG", mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt)
    return buffer.getvalue()
