"""A real `python -m clip_grpc` in a subprocess, for signals (SIGTERM, SIGHUP) and TLS tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent


class ServerProcess:
    """Starts the server on a free port; `.port` once it listens, `.logs` its JSON log lines."""

    def __init__(self, model_dir, *args: str, env: dict | None = None):
        environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "clip_grpc", "--model", str(model_dir), "--host", "127.0.0.1",
             "--port", "0", "--device", "cpu", "--dtype", "fp32", *args],
            stderr=subprocess.PIPE, text=True, env=environment, cwd=REPO,
        )  # fmt: skip
        self.logs: list[dict] = []
        self._logged = threading.Condition()
        self._listening = threading.Event()
        self.port = 0
        threading.Thread(target=self._read_logs, daemon=True).start()
        if not self._listening.wait(60):
            self.kill()
            raise RuntimeError(f"the server did not start: {self.logs}")

    def _read_logs(self) -> None:
        for line in self.process.stderr:
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            with self._logged:
                self.logs.append(entry)
                self._logged.notify_all()
            if entry.get("msg") == "listening":
                self.port = int(entry["address"].rsplit(":", 1)[1])
                self._listening.set()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_serving(self, credentials: grpc.ChannelCredentials | None = None,
                     server_name: str | None = None, timeout: float = 90) -> None:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = (grpc.secure_channel(self.target, credentials, options) if credentials
                   else grpc.insecure_channel(self.target))
        with channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"the server did not become SERVING: {self.logs[-5:]}")

    def wait_for_log(self, message: str, timeout: float = 60) -> dict:
        """The first log entry whose msg is `message`, waiting for it to be written."""
        def found():
            return next((e for e in self.logs if e.get("msg") == message), None)

        with self._logged:
            if not self._logged.wait_for(found, timeout):
                raise TimeoutError(f"no {message!r} in the server's log: {self.logs[-5:]}")
            return found()

    def messages(self) -> list[str]:
        return [entry.get("msg", "") for entry in self.logs]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
