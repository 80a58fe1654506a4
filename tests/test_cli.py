"""`python -m clip_grpc`: flags with env fallbacks, startup errors, SIGTERM."""

import json
import signal
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clip_grpc.config import DEMO_MODEL_DIR, ServerConfig, parse_args


def test_flags_win_over_env_which_wins_over_defaults():
    env = {"CLIP_GRPC_PORT": "6000", "CLIP_GRPC_MAX_BATCH_SIZE": "8", "CLIP_GRPC_MODEL": "/m"}
    config = parse_args(["--max-batch-size", "16"], environ=env)
    assert (config.port, config.max_batch_size, config.model) == (6000, 16, "/m")
    assert config.max_wait_ms == ServerConfig.max_wait_ms
    assert parse_args([], environ={}) == ServerConfig()


def test_no_model_means_the_demo_model():
    config = parse_args([], environ={})
    assert config.serves_demo_model and config.model_path == DEMO_MODEL_DIR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_missing_model_stops_startup_with_a_clear_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "clip_grpc", "--model", str(tmp_path / "absent"),
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    errors = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any("does not exist" in e["msg"] and e["level"] == "error" for e in errors)


def test_serves_then_exits_cleanly_on_sigterm(tiny_clip_dir):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "clip_grpc", "--host", "127.0.0.1"],
        env={"CLIP_GRPC_MODEL": str(tiny_clip_dir), "CLIP_GRPC_PORT": str(port),
             "CLIP_GRPC_METRICS_PORT": "0", "PATH": "/usr/bin:/bin"},
        stderr=subprocess.PIPE, text=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            status = None
            while time.monotonic() < deadline and status != health_pb2.HealthCheckResponse.SERVING:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                except grpc.RpcError:
                    time.sleep(0.2)
            assert status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    records = [json.loads(line) for line in process.stderr.read().splitlines()
               if line.startswith("{")]
    logs = [record["msg"] for record in records]
    assert logs.index("listening") < logs.index("serving") < logs.index("draining")
    assert logs[-1] == "stopped"
    serving = records[logs.index("serving")]  # the batch limits chosen for the device
    assert (serving["device"], serving["max_image_batch_size"],
            serving["max_text_batch_size"]) == ("cpu", 32, 32)


def test_bad_values_are_refused_by_name(capsys):
    import pytest

    for argv, words in ((["--dtype", "fp64"], "--dtype=fp64: dtype must be one of auto, "),
                        (["--max-batch-size", "-1"], "max_batch_size must be at least 0"),
                        (["--max-text-batch-size", "-2"], "max_text_batch_size must be at least 0"),
                        (["--port", "http"], "invalid int value")):
        with pytest.raises(SystemExit) as caught:
            parse_args(argv, environ={})
        assert caught.value.code == 2 and words in capsys.readouterr().err


def test_a_taken_port_stops_startup_naming_the_flag(tmp_path):
    """Plaintext and TLS alike: grpc raises on a failed bind, which must not be a traceback."""
    from tests.certificates import self_signed_certificate

    key, cert = self_signed_certificate(tmp_path, "IP:127.0.0.1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for tls in ([], ["--tls-cert", str(cert), "--tls-key", str(key)]):
            done = subprocess.run(
                [sys.executable, "-m", "clip_grpc", "--host", "127.0.0.1", "--port", str(port),
                 "--metrics-port", "0", *tls],
                capture_output=True, text=True, timeout=120,
            )
            assert done.returncode == 2, done.stderr
            assert "Traceback" not in done.stderr
            records = [json.loads(line) for line in done.stderr.splitlines()
                       if line.startswith("{")]
            assert [r["msg"] for r in records if r["level"] == "error"] == [
                f"cannot start: --port {port}: cannot listen on 127.0.0.1:{port} (the port is "
                "taken, or the host is not an address of this machine); choose another port"]
