"""The real clip-as-service client (clip-client 0.8.3, in its own venv from `make test-deps`)
against our bridge over HTTP and our server over gRPC: encode equals our /v1/embed, rank's order
and scores equal our /v1/rank, profile works."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import image_bytes
from tests.model_factory import REPO

PINS = REPO / "tests" / "compat" / "clip-client-requirements.txt"
SCRIPT = REPO / "tests" / "compat" / "clip_client_calls.py"
VENV = REPO / ".cache" / f"clip-client-{hashlib.sha256(PINS.read_bytes()).hexdigest()[:12]}"
PYTHON = VENV / "bin" / "python"
RED, BLUE = image_bytes((220, 20, 20)), image_bytes((20, 20, 220), fmt="JPEG")
TEXTS = ["a photo of a red circle", "a blue square"]

if not (VENV / ".installed").is_file():
    reason = f"clip-client's venv {VENV.name} is missing: run `make test-deps`"
    if os.environ.get("CLIP_CLIENT_REQUIRED") == "1":  # make test sets it: never skip there
        raise RuntimeError(reason)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clip-client-images")
    (folder / "red.png").write_bytes(RED)
    (folder / "blue.jpg").write_bytes(BLUE)
    (folder / "red.uri").write_text("data:image/png;base64," + base64.b64encode(RED).decode())
    return folder


async def run_clip_client(url: str, images: Path) -> dict:
    """The client in a subprocess, awaited without blocking this loop (which serves the bridge
    and the server). Loopback only: no proxy, telemetry and version check off in the script."""
    out = images / f"answer-{url.split(':')[0]}.json"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(images), "NO_PROXY": "*",
           "NO_VERSION_CHECK": "1", "JINA_OPTOUT_TELEMETRY": "1", "JINA_LOG_LEVEL": "ERROR"}
    process = await asyncio.create_subprocess_exec(
        str(PYTHON), str(SCRIPT), url, str(images), str(out), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=240)
    assert process.returncode == 0, output.decode(errors="replace")[-4000:]
    return json.loads(out.read_text())


async def our_vectors(bridge) -> np.ndarray:
    items = [*({"text": t} for t in TEXTS),
             *({"image": base64.b64encode(data).decode()} for data in (RED, BLUE, RED))]
    response = await bridge.post_json("/v1/embed", {"items": items})
    return np.array([r["embedding"]["values"] for r in json.loads(response.body)["results"]])


async def our_ranking(bridge, query: dict, candidates: list[dict]) -> list[dict]:
    response = await bridge.post_json("/v1/rank", {"query": query, "candidates": candidates})
    return json.loads(response.body)["candidates"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def check(answer: dict, bridge) -> None:
    vectors = np.asarray(answer["encode"], np.float64)
    expected = await our_vectors(bridge)
    assert vectors.shape == expected.shape
    cosines = np.sum(vectors * expected, axis=1) / np.linalg.norm(vectors, axis=1)
    assert np.all(cosines > 0.999), cosines

    first, second = answer["rank"]
    ours_first = await our_ranking(bridge, {"image": b64(RED)},
                                   [{"id": t, "text": t} for t in TEXTS])
    assert [m["text"] for m in first] == [c["id"] for c in ours_first]
    ours_second = await our_ranking(bridge, {"text": TEXTS[1]},
                                    [{"id": "red.png", "image": b64(RED)},
                                     {"id": "blue.jpg", "image": b64(BLUE)}])
    assert [Path(m["uri"]).name for m in second] == [c["id"] for c in ours_second]
    for theirs, ours in ((first, ours_first), (second, ours_second)):
        scores = [m["clip_score"] for m in theirs]
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(scores, [c["probability"] for c in ours], atol=1e-5)
        np.testing.assert_allclose([m["clip_score_cosine"] for m in theirs],
                                   [c["cosine"] for c in ours], atol=1e-5)

    profile = answer["profile"]
    assert profile["Server"] >= 1 and profile["Roundtrip"] > 0


async def test_clip_client_over_http(bridge, images):
    answer = await run_clip_client(bridge.base_url, images)
    assert answer["dtype"] == "float64"  # as the client reads JSON numbers
    await check(answer, bridge)


async def test_clip_client_over_grpc(clip_server, bridge, images):
    answer = await run_clip_client(f"grpc://{clip_server.target}", images)
    assert answer["dtype"] == "float32"
    await check(answer, bridge)
