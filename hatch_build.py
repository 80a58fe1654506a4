"""Hatchling metadata hook shared by the repository's three distributions (clip-grpc,
clip-grpc-client, clip-grpc-bridge): one version number, `__version__` in clip_grpc/__init__.py,
and exact pins on the sibling distributions of that same version; and the build hook that takes
the client's and the bridge's files from the repository root.

Each pyproject.toml declares `dynamic = ["version", "dependencies"]` and lists its dependencies
under [tool.hatch.metadata.hooks.custom]: `dependencies` (ordinary requirements) and `siblings`
(names of the other distributions from this repository, pinned here to the version).
"""

from __future__ import annotations

import re
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface
from hatchling.metadata.plugin.interface import MetadataHookInterface

REPO = Path(__file__).resolve().parent


def project_version() -> str:
    text = (REPO / "clip_grpc" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if match is None:
        raise ValueError("clip_grpc/__init__.py has no __version__ = \"...\" line")
    return match.group(1)


class CustomMetadataHook(MetadataHookInterface):
    def update(self, metadata: dict) -> None:
        version = project_version()
        metadata["version"] = version
        siblings = [f"{name}=={version}" for name in self.config.get("siblings", [])]
        metadata["dependencies"] = [*self.config.get("dependencies", []), *siblings]


class CustomBuildHook(BuildHookInterface):
    """Puts the repository files named in the hook's `files` into a distribution's wheel.

    The client and the bridge are built from distributions/<name>/, away from their code, so
    their wheels take the files from the repository root, at the same paths. An editable install
    gets none of them: `dev-mode-dirs` puts the repository root itself on sys.path.
    """

    def initialize(self, version: str, build_data: dict) -> None:
        if version == "editable":
            return
        for relative in self.config.get("files", []):
            build_data["force_include"][str(REPO / relative)] = relative
