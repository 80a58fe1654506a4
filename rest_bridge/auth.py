"""API keys of the bridge's HTTP clients, and the bridge's own token towards the server."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from pathlib import Path

from rest_bridge.config import BridgeConfig
from rest_bridge.status_map import ApiError
from rest_bridge.watched_file import WatchedFiles

API_KEY_HEADER = "X-API-Key"
BEARER = "bearer "


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _read_lines(path: str) -> list[str]:
    """Non-empty lines, blanks around them stripped; lines starting with # are comments."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _load_keys(paths: Sequence[str]) -> tuple[bytes, ...]:
    return tuple(_digest(key) for key in _read_lines(paths[0]))


def _load_token(paths: Sequence[str]) -> str:
    lines = _read_lines(paths[0])
    if not lines:
        raise ValueError(f"{paths[0]} holds no token")
    return lines[0]


def presented_key(headers) -> str | None:
    """The key of `Authorization: Bearer <key>`, else of `X-API-Key: <key>`."""
    authorization = headers.get("Authorization", "")
    if authorization[: len(BEARER)].lower() == BEARER:
        return authorization[len(BEARER):].strip() or None
    return headers.get(API_KEY_HEADER, "").strip() or None


class ApiKeys:
    """The keys of `--api-key-file`, re-read on change: a key removed from the file stops
    working. Keys are compared as SHA-256 digests with hmac.compare_digest, against every
    key, so the time taken says nothing about which key (or how much of one) matched."""

    def __init__(self, path: str):
        self._keys = WatchedFiles("API key file", [path], _load_keys)

    def accepts(self, key: str | None) -> bool:
        if key is None:
            return False
        digest = _digest(key)
        matched = False
        for known in self._keys.current():
            matched |= hmac.compare_digest(digest, known)
        return matched

    def check(self, headers) -> None:
        if not self.accepts(presented_key(headers)):
            raise ApiError(
                401, "UNAUTHENTICATED",
                "a valid API key is needed: send 'Authorization: Bearer <key>' or "
                f"'{API_KEY_HEADER}: <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def reload(self) -> bool:
        return self._keys.reload()


class GrpcToken:
    """The first line of `--grpc-auth-token-file`, sent to the server as
    `authorization: Bearer <token>` metadata on every call."""

    def __init__(self, path: str):
        self._token = WatchedFiles("gRPC token file", [path], _load_token)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._token.current()}"),)

    def reload(self) -> bool:
        return self._token.reload()


class BridgeAuth:
    """What make_app keeps: the HTTP clients' keys (None: no check) and the server token."""

    def __init__(self, config: BridgeConfig):
        self.api_keys = ApiKeys(config.api_key_file) if config.api_key_file else None
        self.grpc_token = (
            GrpcToken(config.grpc_auth_token_file) if config.grpc_auth_token_file else None
        )
        self.metrics_need_key = config.metrics_auth

    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.grpc_token.metadata() if self.grpc_token is not None else ()

    def reload(self) -> None:
        for watched in (self.api_keys, self.grpc_token):
            if watched is not None:
                watched.reload()
