"""The README's quickstart, run as written: the stack `make run` starts (its entrypoint, on the
demo model), then the quickstart's curl and grpcurl commands, character for character except
for the ports, which are free ones here."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from clip_grpc.config import DEMO_MODEL_DIR
from tests.entrypoint_helpers import REPO, bridge_ready, entrypoints, image_env, wait_until

SOURCES = (REPO / "README.md",)
COMMAND_STARTS = ("curl ", ".venv/bin/grpcurl ")


def quickstart_section() -> str:
    for source in SOURCES:
        text = source.read_text() if source.is_file() else ""
        match = re.search(r"^## Quickstart\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
        if match:
            return match.group(1)
    pytest.fail(f"no '## Quickstart' section in {' or '.join(map(str, SOURCES))}")


def quickstart_commands() -> list[str]:
    """The curl and grpcurl commands of the section's ```sh blocks; a command runs on over the
    lines that do not start a new one."""
    commands: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", quickstart_section(), re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            if line.startswith(COMMAND_STARTS):
                commands.append(line)
            elif commands and line.strip():
                commands[-1] += "\n" + line
    return commands


def test_the_quickstart_shows_make_run_curl_and_grpcurl():
    commands = quickstart_commands()
    assert "make run" in quickstart_section()
    assert any(c.startswith("curl") and "localhost:8081/syte_test/clip" in c for c in commands)
    methods = {c.split()[-1] for c in commands if c.startswith(".venv/bin/grpcurl")}
    assert {"list", "grpc.health.v1.Health/Check", "clip_grpc.v1.ClipService/Info",
            "clip_grpc.v1.ClipService/Rank"} <= methods


def run_command(command: str, ports: dict[str, str]) -> str:
    for default, port in ports.items():
        command = command.replace(f"localhost:{default}", f"localhost:{port}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    return done.stdout


def pictured_words(command: str) -> set[str]:
    """What the command's picture shows, from its file name: examples/red_circle.png -> red,
    circle."""
    (name,) = set(re.findall(r"examples/(\w+)\.(?:png|jpg)", command))
    return set(name.split("_"))


def assert_curl_answer(command: str, answer: dict) -> None:
    shown = pictured_words(command)
    captions = dict(re.findall(r'-F "text-([\w.-]+)=([^"]*)"', command))
    assert len(captions) >= 2
    matching = {i for i, caption in captions.items() if shown <= set(caption.split())}
    assert matching and matching != set(captions)
    for form_id in captions:
        assert len(answer[f"image_{form_id}_vector"]) == len(answer[f"text_{form_id}_vector"])
    cosine = {i: answer[f"image_vector_{i}_cosine"] for i in captions}
    score = {i: answer[f"image_vector_{i}_similarity_score"] for i in captions}
    wrong = set(captions) - matching
    assert min(cosine[i] for i in matching) > max(cosine[i] for i in wrong), cosine
    assert min(score[i] for i in matching) > max(score[i] for i in wrong), score


def assert_grpcurl_answer(command: str, output: str) -> None:
    method = command.split()[-1]
    if method == "list":
        assert {"clip_grpc.v1.ClipService", "grpc.health.v1.Health"} <= set(output.split())
    elif method == "grpc.health.v1.Health/Check":
        assert json.loads(output) == {"status": "SERVING"}
    elif method == "clip_grpc.v1.ClipService/Info":
        info = json.loads(output)
        assert info["model_source"] == str(DEMO_MODEL_DIR.resolve())
        assert info["model_family"] == "clip" and info["embedding_dim"] > 0
    elif method == "clip_grpc.v1.ClipService/Rank":
        ranked = json.loads(output)["candidates"]
        shown = pictured_words(command)
        assert shown <= set(ranked[0]["id"].split()), ranked
        assert not shown <= set(ranked[-1]["id"].split()), ranked
        assert ranked[0]["cosine"] > ranked[-1]["cosine"]
    else:
        pytest.fail(f"the test does not know what to expect of {method}")


def test_the_quickstart_commands_work_as_shown(tmp_path):
    commands = quickstart_commands()
    empty_mount = tmp_path / "model"
    empty_mount.mkdir()
    env = image_env(empty_mount)
    ports = {"8081": env["REST_BRIDGE_PORT"], "50051": env["CLIP_GRPC_PORT"]}
    with entrypoints(tmp_path) as run:
        entrypoint = run(env)  # what `make run` runs, with the venv's python on PATH
        wait_until(lambda: bridge_ready(entrypoint), "ready REST bridge", entrypoint)
        for command in commands:
            output = run_command(command, ports)
            if command.startswith("curl"):
                assert_curl_answer(command, json.loads(output))
            else:
                assert_grpcurl_answer(command, output)
        code, _ = entrypoint.stop()
        assert code == 0, entrypoint.log
