"""Fresh virtual environments for install tests, offline and in seconds.

`pip install --no-index --find-links WHEELHOUSE` needs wheels of every dependency; pip's cache
usually has none (pip caches downloads, and the CI machine keeps only torch on disk). So the
wheelhouse is made from what this test run's own venv has installed: each distribution is zipped
back into a wheel from the files its RECORD lists, under the tags its WHEEL file names. The fresh
venv then resolves and installs for real, and sees nothing that was not declared.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

_SKIPPED_METADATA = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def _wheel_tag(wheel_file: str) -> str:
    """A wheel filename's compressed tag, from WHEEL's `Tag:` lines (cp311-cp311-manylinux...)."""
    parts: list[list[str]] = [[], [], []]
    for line in wheel_file.splitlines():
        if line.startswith("Tag:"):
            for position, part in enumerate(line.split(":", 1)[1].strip().split("-")):
                if part not in parts[position]:
                    parts[position].append(part)
    return "-".join(".".join(part) for part in parts)


def repack(distribution: importlib.metadata.Distribution, folder: Path) -> Path:
    name = canonicalize_name(distribution.metadata["Name"]).replace("-", "_")
    version = distribution.version
    target = folder / f"{name}-{version}-{_wheel_tag(distribution.read_text('WHEEL'))}.whl"
    records = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as wheel:
        record_name = ""
        for file in distribution.files or ():
            path = file.as_posix()
            if path.startswith("..") or "__pycache__" in path:
                continue  # console scripts (pip writes them again) and bytecode
            if ".dist-info/" in path and path.rsplit("/", 1)[1] in _SKIPPED_METADATA:
                record_name = record_name or path.split("/", 1)[0] + "/RECORD"
                continue
            data = Path(distribution.locate_file(file)).read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{path},sha256={digest.decode()},{len(data)}")
            wheel.writestr(path, data)
        records.append(f"{record_name},,")
        wheel.writestr(record_name, "\n".join(records) + "\n")
    return target


def closure(requirements: list[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions `requirements` need, transitively (markers evaluated here)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        key = canonicalize_name(requirement.name)
        if key in found:
            continue
        distribution = importlib.metadata.distribution(requirement.name)
        found[key] = distribution
        for text in distribution.requires or ():
            child = Requirement(text)
            extras = requirement.extras or {""}
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras):
                pending.append(child)
    return list(found.values())


def wheelhouse(requirements: list[str], folder: Path) -> Path:
    """A folder with a wheel of each installed distribution that `requirements` need."""
    folder.mkdir(parents=True, exist_ok=True)
    for distribution in closure(requirements):
        repack(distribution, folder)
    return folder


def fresh_venv(folder: Path) -> Path:
    """A venv without pip (this venv's pip installs into it); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True,
                   timeout=120)
    return folder / "bin" / "python"


def pip_install(python: Path, wheels: Path, *requirements: str) -> None:
    """Install from `wheels` only: a dependency missing there fails the install."""
    # No pip.conf nor PIP_* variables: their find-links (a machine's torch) would count too.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-compile",
         "--no-index", "--find-links", str(wheels), *requirements],
        check=True, timeout=300, env=env,
    )
