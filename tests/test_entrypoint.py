"""docker/entrypoint.sh, run outside a container the way the image runs it: both services on
the demo model, the choice of model, signals, and a dying child."""

from __future__ import annotations

import os
import signal
import socket
import zipfile
from pathlib import Path

import pytest

from clip_grpc.config import DEMO_MODEL_DIR
from demo.examples import EXAMPLES, class_caption
from tests.entrypoint_helpers import (
    REPO,
    STARTUP_S,
    STOP_S,
    Entrypoint,
    bridge_ready,
    entrypoints,
    healthcheck,
    image_env,
    model_info,
    post_clip_form,
    run_to_exit,
    server_serving,
    wait_until,
)


@pytest.fixture
def run_entrypoint(tmp_path):
    with entrypoints(tmp_path) as run:
        yield run


def assert_stopped_cleanly(entrypoint: Entrypoint, code: int, seconds: float) -> None:
    assert code == 0, entrypoint.log
    assert seconds < STOP_S
    assert "gRPC server exited (code 0)" in entrypoint.log
    assert "REST bridge exited (code 0)" in entrypoint.log
    for pid in entrypoint.child_pids().values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_all_mode_serves_the_demo_model_and_stops_both_on_sigterm(tmp_path, run_entrypoint):
    empty_mount = tmp_path / "model"
    empty_mount.mkdir()
    entrypoint = run_entrypoint(image_env(empty_mount))
    wait_until(lambda: bridge_ready(entrypoint), "ready REST bridge", entrypoint)

    assert "shipped demo model" in entrypoint.log
    assert set(entrypoint.child_pids()) == {"gRPC server", "REST bridge"}
    assert model_info(entrypoint).model_source == str(DEMO_MODEL_DIR.resolve())
    assert healthcheck(entrypoint) == 0

    # Seed 002's request: each example picture with its caption, and again with another's.
    texts, files = {}, {}
    for index, (name, scene) in enumerate(EXAMPLES):
        wrong_scene = EXAMPLES[(index + 1) % len(EXAMPLES)][1]
        files[f"image-match{index}"] = files[f"image-wrong{index}"] = (
            REPO / "examples" / name).read_bytes()
        texts[f"text-match{index}"] = class_caption(scene)
        texts[f"text-wrong{index}"] = class_caption(wrong_scene)
    answer = post_clip_form(entrypoint, texts, files)
    for index, (name, _) in enumerate(EXAMPLES):
        matching = answer[f"image_vector_match{index}_cosine"]
        wrong = answer[f"image_vector_wrong{index}_cosine"]
        assert matching > wrong, f"{name}: {texts[f'text-match{index}']!r} scored {matching}, " \
                                 f"{texts[f'text-wrong{index}']!r} {wrong}"

    code, seconds = entrypoint.stop(signal.SIGTERM)
    assert_stopped_cleanly(entrypoint, code, seconds)
    assert "got SIGTERM" in entrypoint.log
    assert healthcheck(entrypoint) == 1


def test_all_mode_drains_both_on_sigint_too(tmp_path, tiny_clip_dir, run_entrypoint):
    entrypoint = run_entrypoint(image_env(tiny_clip_dir))
    wait_until(lambda: bridge_ready(entrypoint), "ready REST bridge", entrypoint)
    code, seconds = entrypoint.stop(signal.SIGINT)
    assert_stopped_cleanly(entrypoint, code, seconds)
    assert "got SIGINT" in entrypoint.log


def zipped(folder: Path, into: Path) -> Path:
    """A zip holding the model under a top folder, as seed 002's clip-vit-large-patch14.zip."""
    into.mkdir()
    archive = into / f"{folder.name}.zip"
    with zipfile.ZipFile(archive, "w") as zipped_file:
        for path in sorted(folder.iterdir()):
            zipped_file.write(path, f"{folder.name}/{path.name}")
    return archive


@pytest.mark.parametrize("mount", ["folder", "zip"])
def test_server_mode_serves_the_model_mounted_at_model_dir(
    mount, tmp_path, tiny_clip_dir, run_entrypoint
):
    if mount == "folder":
        model_dir, expected = tiny_clip_dir, tiny_clip_dir
    else:
        expected = zipped(tiny_clip_dir, tmp_path / "model")
        model_dir = expected.parent
    entrypoint = run_entrypoint(image_env(model_dir), "server")
    wait_until(lambda: server_serving(entrypoint), "SERVING gRPC server", entrypoint)

    assert f"model: the {mount} {expected}" in entrypoint.log
    info = model_info(entrypoint)
    assert info.model_source == str(expected.resolve())
    assert info.embedding_dim == 16  # the tiny model's, not the demo model's
    assert healthcheck(entrypoint) == 0  # nothing listens on the bridge port: not counted

    code, _ = entrypoint.stop(signal.SIGTERM)
    assert code == 0, entrypoint.log


def test_clip_grpc_model_wins_over_model_dir(tmp_path, tiny_clip_dir):
    mounted = zipped(tiny_clip_dir, tmp_path / "model")
    env = image_env(mounted.parent, CLIP_GRPC_MODEL=str(tiny_clip_dir))
    code, log = run_to_exit(env, "server", "--help")
    assert code == 0, log
    assert f"model: {tiny_clip_dir} (from CLIP_GRPC_MODEL)" in log


@pytest.mark.parametrize("mount", ["absent", "empty"])
def test_nothing_at_model_dir_means_the_demo_model(mount, tmp_path):
    model_dir = tmp_path / "model"
    if mount == "empty":
        model_dir.mkdir()
    code, log = run_to_exit(image_env(model_dir), "server", "--help")
    assert code == 0, log
    assert "model: the shipped demo model" in log
    assert "usage: clip-grpc" in log  # the flags after the mode went to the server


@pytest.mark.parametrize("contents", [("a.zip", "b.zip"), ("notes.txt",)])
def test_a_model_dir_holding_something_else_is_an_error(contents, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in contents:
        (model_dir / name).write_bytes(b"")
    code, log = run_to_exit(image_env(model_dir))
    assert code == 2
    assert "holds neither a config.json nor exactly one .zip" in log
    assert all(name in log for name in contents)
    assert "gRPC server (pid" not in log  # it stopped before starting anything


@pytest.mark.parametrize("args", [("serve",), ("all", "--port", "1")])
def test_usage_errors(args, tmp_path):
    code, log = run_to_exit(image_env(tmp_path / "model"), *args)
    assert code == 64
    assert "error:" in log


def test_all_mode_stops_the_bridge_and_fails_when_the_server_dies(tmp_path, run_entrypoint):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    env = image_env(tmp_path / "model", CLIP_GRPC_MODEL=str(broken))
    entrypoint = run_entrypoint(env)
    assert entrypoint.wait(STARTUP_S) == 2  # the server's "model did not load" code
    assert "gRPC server exited unexpectedly (code 2); stopping the other" in entrypoint.log
    assert "REST bridge exited (code 0)" in entrypoint.log


def test_all_mode_stops_the_server_and_fails_when_the_bridge_dies(
    tmp_path, tiny_clip_dir, run_entrypoint
):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        env = image_env(tiny_clip_dir, REST_BRIDGE_PORT=str(taken.getsockname()[1]))
        entrypoint = run_entrypoint(env)
        code = entrypoint.wait(STARTUP_S)
    # The bridge refuses a taken port at startup (exit 2, as every startup error); the
    # entrypoint passes its code on.
    assert code != 0
    assert f"REST bridge exited unexpectedly (code {code}); stopping the other" in entrypoint.log
    assert "gRPC server exited (code" in entrypoint.log
    with pytest.raises(ProcessLookupError):
        os.kill(entrypoint.child_pids()["gRPC server"], 0)
