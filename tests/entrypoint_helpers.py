"""Run docker/entrypoint.sh outside a container the way the image runs it: in its own session
(like PID 1), with the venv's python first on PATH and configuration only through the
environment. It runs from the repository root, as `make run` does (the image has the package
installed instead)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clip_grpc.v1 import clip_pb2, clip_pb2_grpc
from tests.rest_helpers import encode_form

REPO = Path(__file__).resolve().parent.parent
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
HEALTHCHECK = REPO / "docker" / "healthcheck.py"
STARTUP_S = 120  # importing torch and loading a model on 2 busy cores
STOP_S = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def image_env(model_dir: Path, **extra: str) -> dict[str, str]:
    """The environment the Dockerfile sets, with free ports and MODEL_DIR standing in for
    /model."""
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "MODEL_DIR": str(model_dir),
        "CLIP_GRPC_PORT": str(free_port()),
        "REST_BRIDGE_PORT": str(free_port()),
        "CLIP_GRPC_METRICS_PORT": str(free_port()),  # not 9090: other servers may hold it
        **extra,
    }


class Entrypoint:
    """The script in a subprocess; its stderr (its log and its children's) goes to a file."""

    def __init__(self, tmp_path: Path, env: dict[str, str], *args: str):
        self.env = env
        self.log_path = tmp_path / f"entrypoint-{time.monotonic_ns()}.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [str(ENTRYPOINT), *args], env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.env['CLIP_GRPC_PORT']}"

    @property
    def bridge_url(self) -> str:
        return f"http://127.0.0.1:{self.env['REST_BRIDGE_PORT']}"

    def child_pids(self) -> dict[str, int]:
        return {name: int(pid) for name, pid in
                re.findall(r"entrypoint: (gRPC server|REST bridge) \(pid (\d+)\)", self.log)}

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, float]:
        """Signal the script only (as `docker stop` does PID 1); its exit code and seconds."""
        started = time.monotonic()
        self.process.send_signal(signum)
        return self.wait(STOP_S), time.monotonic() - started

    def kill_all(self) -> None:
        for pid in [self.process.pid, *self.child_pids().values()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()


@contextlib.contextmanager
def entrypoints(tmp_path: Path):
    """`run(env, *args)` starts the script; whatever is left running is killed at the end."""
    started: list[Entrypoint] = []

    def run(env: dict[str, str], *args: str) -> Entrypoint:
        started.append(Entrypoint(tmp_path, env, *args))
        return started[-1]

    try:
        yield run
    finally:
        for entrypoint in started:
            entrypoint.kill_all()


def run_to_exit(env: dict[str, str], *args: str) -> tuple[int, str]:
    done = subprocess.run([str(ENTRYPOINT), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=STARTUP_S)
    return done.returncode, done.stdout + done.stderr


def wait_until(condition, what: str, entrypoint: Entrypoint, timeout: float = STARTUP_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if entrypoint.process.poll() is not None:
            pytest.fail(f"the entrypoint exited ({entrypoint.process.returncode}) before "
                        f"{what}:\n{entrypoint.log}")
        if condition():
            return
        time.sleep(0.3)
    pytest.fail(f"no {what} after {timeout}s:\n{entrypoint.log}")


def bridge_ready(entrypoint: Entrypoint) -> bool:
    try:
        with urllib.request.urlopen(entrypoint.bridge_url + "/readyz", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def server_serving(entrypoint: Entrypoint) -> bool:
    with grpc.insecure_channel(entrypoint.grpc_target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def model_info(entrypoint: Entrypoint) -> clip_pb2.InfoResponse:
    with grpc.insecure_channel(entrypoint.grpc_target) as channel:
        return clip_pb2_grpc.ClipServiceStub(channel).Info(clip_pb2.InfoRequest(), timeout=10)


def healthcheck(entrypoint: Entrypoint) -> int:
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env=entrypoint.env,
                          capture_output=True, timeout=30).returncode


def post_clip_form(entrypoint: Entrypoint, texts: dict, files: dict) -> dict:
    content_type, body = encode_form(texts, files)
    request = urllib.request.Request(entrypoint.bridge_url + "/syte_test/clip", data=body,
                                     headers={"Content-Type": content_type}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


