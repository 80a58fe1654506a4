"""API keys of the bridge's HTTP clients, and the bridge's own token towards the server."""

from __future__ import annotations

from collections.abc import Sequence

from clip_grpc.token_file import BEARER, TokenSet, bearer_token, secret_lines
from clip_grpc.watched_file import WatchedFiles
from rest_bridge.config import BridgeConfig
from rest_bridge.status_map import ApiError

API_KEY_HEADER = "X-API-Key"


def _load_token(paths: Sequence[str]) -> str:
    lines = secret_lines(paths[0])
    if not lines:
        raise ValueError(f"{paths[0]} holds no token")
    return lines[0]


def presented_key(headers) -> str | None:
    """The key of `Authorization: Bearer <key>`, else of `X-API-Key: <key>`."""
    authorization = headers.get("Authorization", "")
    if authorization[: len(BEARER)].lower() == BEARER:
        return bearer_token(authorization)
    return headers.get(API_KEY_HEADER, "").strip() or None


class ApiKeys:
    """The keys of `--api-key-file` (clip_grpc.token_file.TokenSet: re-read on change, compared
    in constant time against every key)."""

    def __init__(self, path: str):
        self._keys = TokenSet("API key file", path)

    def accepts(self, key: str | None) -> bool:
        return self._keys.accepts(key)

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
