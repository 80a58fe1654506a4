"""The three distributions (clip-grpc, clip-grpc-client, clip-grpc-bridge): what their wheels
hold, one version, and client and bridge installs into fresh venvs that never see torch."""

from __future__ import annotations

import ast
import asyncio
import email
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tomllib

import clip_grpc
from clip_grpc.embed_cli.outputs import load_embeddings
from tests.model_factory import REPO
from tests.wheelhouse import fresh_venv, pip_install, wheelhouse

PROJECTS = {"clip-grpc": REPO, "clip-grpc-client": REPO / "distributions" / "client",
            "clip-grpc-bridge": REPO / "distributions" / "bridge"}
HEAVY = ("torch", "transformers", "safetensors", "sentencepiece")


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheels")
    for project in PROJECTS.values():
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "--wheel-dir", str(out), str(project)],
            check=True, timeout=300,
        )
    return out


@pytest.fixture(scope="module")
def wheels(wheel_dir):
    found = {}
    for name in PROJECTS:
        (path,) = wheel_dir.glob(name.replace("-", "_") + "-*.whl")
        found[name] = zipfile.ZipFile(path)
    return found


def files_of(wheel: zipfile.ZipFile) -> set[str]:
    return {name for name in wheel.namelist() if ".dist-info/" not in name}


def metadata_of(wheel: zipfile.ZipFile) -> email.message.Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.message_from_bytes(wheel.read(name))


def tracked(folder: str) -> set[str]:
    listed = subprocess.run(["git", "ls-files", folder], cwd=REPO, capture_output=True,
                            text=True, check=True, timeout=60).stdout.split()
    return {path for path in listed if (REPO / path).is_file()}


def test_the_server_and_client_wheels_split_clip_grpc_between_them(wheels):
    server, client = files_of(wheels["clip-grpc"]), files_of(wheels["clip-grpc-client"])
    assert not server & client  # one owner per file: uninstalling one must not break the other
    assert tracked("clip_grpc") <= server | client
    for name in ("clip_grpc/__init__.py", "clip_grpc/v1/clip_pb2.py", "clip_grpc/v1/clip_pb2.pyi",
                 "clip_grpc/v1/clip_pb2_grpc.py", "clip_grpc/client/client.py",
                 "clip_grpc/embed_cli/__init__.py", "clip_grpc/settings.py"):
        assert name in client
    assert "clip_grpc/server.py" in server and "clip_grpc/model/loading.py" in server
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "vocab.json",
                 "merges.txt", "tokenizer_config.json", "MODEL_CARD.md"):
        assert f"clip_grpc/demo_model/{name}" in server
    assert not [n for n in server | client if "__pycache__" in n or n.endswith(".pyc")]


def test_the_bridge_wheel_holds_the_bridge(wheels):
    bridge = files_of(wheels["clip-grpc-bridge"])
    assert tracked("rest_bridge") <= bridge
    assert {n.split("/")[0] for n in bridge} == {"rest_bridge"}


def test_one_version_and_exact_pins_between_the_siblings(wheels):
    version = clip_grpc.__version__
    for wheel in wheels.values():
        assert metadata_of(wheel)["Version"] == version
    for name in ("clip-grpc", "clip-grpc-bridge"):
        assert f"clip-grpc-client=={version}" in metadata_of(wheels[name]).get_all("Requires-Dist")


def test_neither_the_client_nor_the_bridge_asks_for_torch(wheels):
    for name in ("clip-grpc-client", "clip-grpc-bridge"):
        requires = " ".join(metadata_of(wheels[name]).get_all("Requires-Dist"))
        assert not [heavy for heavy in HEAVY if heavy in requires], name
    client_requires = metadata_of(wheels["clip-grpc-client"]).get_all("Requires-Dist")
    assert any(r.startswith("pyarrow") and "extra == 'parquet'" in r for r in client_requires)
    assert any(r.startswith("ray[data]==") and "extra == 'ray'" in r for r in client_requires)


def test_each_distribution_declares_its_console_script(wheels):
    for name, line in (("clip-grpc", "clip-grpc = clip_grpc.__main__:main"),
                       ("clip-grpc-bridge", "rest-bridge = rest_bridge.__main__:main"),
                       ("clip-grpc-client", "clip-embed = clip_grpc.embed_cli:main")):
        (entry_points,) = [n for n in wheels[name].namelist() if n.endswith("entry_points.txt")]
        assert line in wheels[name].read(entry_points).decode()


def _client_files() -> list[str]:
    config = tomllib.loads((PROJECTS["clip-grpc-client"] / "pyproject.toml").read_text())
    return config["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["custom"]["files"]


def _clip_grpc_imports(path) -> set[str]:
    """`clip_grpc.x.y` for each module of clip_grpc that the file at `path` imports."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.startswith("clip_grpc.") or n == "clip_grpc")
    return found


def test_what_the_client_and_the_bridge_import_ships_in_the_client():
    """Fast check of the lists in distributions/client/pyproject.toml and pyproject.toml."""
    listed = _client_files()
    shipped = [REPO / f for f in listed]
    sources = [p for p in (REPO / "rest_bridge").rglob("*.py")]
    sources += [p for root in shipped for p in ([root] if root.is_file() else root.rglob("*.py"))]
    missing = set()
    for source in sources:
        for module in _clip_grpc_imports(source):
            as_path = module.replace(".", "/")
            if (REPO / as_path).is_dir() or (REPO / f"{as_path}.py").is_file():
                if not any(as_path == f.removesuffix(".py") or as_path.startswith(
                        f.removesuffix(".py") + "/") or f == f"{as_path}/__init__.py"
                        for f in listed):
                    missing.add(f"{as_path} (imported by {source.relative_to(REPO)})")
    assert not missing, (
        "add these to `files` in distributions/client/pyproject.toml and to `exclude` in "
        f"pyproject.toml (the client and the bridge must not need the server): {sorted(missing)}")


def _requirements(wheel: zipfile.ZipFile, extras: tuple[str, ...] = ()) -> list[str]:
    """The wheel's requirements, less its siblings (they come from the wheel folder)."""
    chosen = []
    for text in metadata_of(wheel).get_all("Requires-Dist"):
        requirement, _, marker = text.partition(";")
        if requirement.startswith("clip-grpc"):
            continue
        if not marker or any(f"extra == '{e}'" in marker for e in extras):
            chosen.append(requirement.strip())
    return chosen


@pytest.fixture(scope="module")
def offline_wheels(wheels, wheel_dir, tmp_path_factory):
    """Wheels of the client's and the bridge's dependencies (from this venv) and of ours."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    wheelhouse(_requirements(wheels["clip-grpc-client"])
               + _requirements(wheels["clip-grpc-bridge"]), folder)
    for name in ("clip-grpc-client", "clip-grpc-bridge"):
        (folder / wheels[name].filename.rsplit("/", 1)[-1]).write_bytes(
            (wheel_dir / wheels[name].filename.rsplit("/", 1)[-1]).read_bytes())
    return folder


NO_TORCH = (
    "import importlib.util, sys; "
    f"missing = [m for m in {HEAVY!r} if importlib.util.find_spec(m) is None]; "
    f"assert missing == list({HEAVY!r}), missing; "
)


async def run(*command, **kwargs) -> str:
    """A subprocess, off the event loop that serves the test server."""
    done = await asyncio.to_thread(subprocess.run, [str(c) for c in command], capture_output=True,
                                   text=True, timeout=300, **kwargs)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_client_alone_installs_without_torch_and_embeds(
    offline_wheels, clip_server, tmp_path
):
    python = fresh_venv(tmp_path / "venv")
    await asyncio.to_thread(pip_install, python, offline_wheels, "clip-grpc-client")
    script = NO_TORCH + (
        "from clip_grpc.client import Client; "
        f"vectors = Client({clip_server.target!r}).encode(['a cat', 'a dog']); "
        "assert 'torch' not in sys.modules; print(vectors.shape)"
    )
    # -I: the fresh venv's own site-packages only (not this checkout via PYTHONPATH or cwd).
    shape = await run(python, "-I", "-c", script, cwd=tmp_path)
    assert shape.strip().startswith("(2, ")

    lines, out = tmp_path / "captions.txt", tmp_path / "out"
    lines.write_text("a red square\na blue circle\na green triangle\n")
    await run(python.parent / "clip-embed", lines, "-o", out, "--server", clip_server.target,
              "--no-progress", cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    ids, vectors = load_embeddings(out)
    assert len(ids) == 3 and vectors.shape[0] == 3
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)


async def test_the_bridge_installs_without_torch(offline_wheels, tmp_path):
    python = fresh_venv(tmp_path / "venv")
    await asyncio.to_thread(pip_install, python, offline_wheels, "clip-grpc-bridge")
    script = NO_TORCH + "import rest_bridge.__main__, rest_bridge.app; print('ok')"
    assert (await run(python, "-I", "-c", script, cwd=tmp_path)).strip() == "ok"
    help_text = await run(python.parent / "rest-bridge", "--help", cwd=tmp_path)
    assert "REST_BRIDGE_GRPC_TARGET" in help_text


def test_make_run_needs_python_only_and_make_test_brings_the_test_tools():
    def planned(target: str) -> str:
        return subprocess.run(["make", "-nB", target], cwd=REPO, capture_output=True, text=True,
                              check=True, timeout=60).stdout

    assert "npm" not in planned("run")
    assert "npm install" in planned("test") and "npm install" in planned("install")
