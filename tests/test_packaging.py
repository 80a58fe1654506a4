"""What `pip install .` (the Docker image's install step) puts in the wheel."""

import subprocess
import sys
import zipfile

import pytest

from tests.model_factory import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(REPO)],
        check=True, timeout=300,
    )
    (wheel,) = out.glob("clip_grpc-*.whl")
    return zipfile.ZipFile(wheel)


def test_the_wheel_carries_the_stubs_and_both_services(wheel):
    wheel_files = set(wheel.namelist())
    for name in ("clip_grpc/v1/clip_pb2.py", "clip_grpc/v1/clip_pb2.pyi",
                 "clip_grpc/v1/clip_pb2_grpc.py", "clip_grpc/server.py",
                 "rest_bridge/app.py", "rest_bridge/handlers/clip_form.py",
                 "rest_bridge/static/index.html", "rest_bridge/static/playground.js",
                 "rest_bridge/static/docs.js"):
        assert name in wheel_files


def test_the_wheel_carries_the_demo_model(wheel):
    wheel_files = set(wheel.namelist())
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "vocab.json",
                 "merges.txt", "tokenizer_config.json", "MODEL_CARD.md"):
        assert f"clip_grpc/demo_model/{name}" in wheel_files


def test_the_wheel_declares_the_console_scripts(wheel):
    (name,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    scripts = wheel.read(name).decode()
    for line in ("clip-grpc = clip_grpc.__main__:main", "rest-bridge = rest_bridge.__main__:main",
                 "clip-embed = clip_grpc.embed_cli:main"):
        assert line in scripts
