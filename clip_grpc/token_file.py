"""Files of secrets, one per line: the server's `--auth-token-file`, the bridge's
`--api-key-file` and its `--grpc-auth-token-file`. Torch-free (the client distribution ships it
for the bridge).

A file holds one secret per line; blanks around a line are stripped, empty lines and lines
starting with # are skipped.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from pathlib import Path

from clip_grpc.watched_file import WatchedFiles

BEARER = "bearer "


def secret_lines(path: str | Path) -> list[str]:
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def bearer_token(authorization: str) -> str | None:
    """The token of an `authorization: Bearer <token>` value (the scheme in any case), else
    None."""
    if authorization[: len(BEARER)].lower() != BEARER:
        return None
    return authorization[len(BEARER):].strip() or None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _load_digests(paths: Sequence[str]) -> tuple[bytes, ...]:
    return tuple(_digest(secret) for secret in secret_lines(paths[0]))


class TokenSet:
    """The secrets of one file, re-read on change (see WatchedFiles): a line removed from the
    file stops being accepted. Secrets are compared as SHA-256 digests with
    hmac.compare_digest, against every secret, so the time taken says nothing about which one
    (or how much of one) matched."""

    def __init__(self, what: str, path: str):
        self._digests = WatchedFiles(what, [path], _load_digests)

    def __len__(self) -> int:
        return len(self._digests.current())

    def accepts(self, secret: str | None) -> bool:
        if secret is None:
            return False
        digest = _digest(secret)
        matched = False
        for known in self._digests.current():
            matched |= hmac.compare_digest(digest, known)
        return matched

    def reload(self) -> bool:
        return self._digests.reload()
