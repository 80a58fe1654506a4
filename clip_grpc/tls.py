"""The server's TLS (`--tls-cert`, `--tls-key`, and for mTLS `--tls-client-ca`), re-read while it
runs.

grpc asks a certificate-configuration fetcher for the configuration at each new connection's
handshake (`grpc.dynamic_ssl_server_credentials`): it answers the current one when the files
have changed (or SIGHUP re-read them), None otherwise, so new connections get new certificates
and open ones carry on. Files are checked before use, at start (a bad one stops startup, naming
its flag) and on each re-read (a bad or half-written one is logged and the previous kept).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

import grpc

from .config import ServerConfig
from .watched_file import WatchedFiles

FLAGS = ("--tls-cert", "--tls-key", "--tls-client-ca")


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{flag} {path}: {error.strerror or error}") from None


def _check(paths: Sequence[str]) -> None:
    """What grpc would only find out at the first handshake: PEM that does not parse, a key that
    is not the certificate's, a CA file without certificates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(paths[0], paths[1])
    except ssl.SSLError as error:
        problem = ("the key is not the certificate's" if error.reason == "KEY_VALUES_MISMATCH"
                   else f"not a PEM certificate chain and its key ({error.reason or error})")
        raise ValueError(f"--tls-cert {paths[0]} / --tls-key {paths[1]}: {problem}") from None
    if len(paths) > 2:
        try:
            context.load_verify_locations(cafile=paths[2])
        except ssl.SSLError as error:
            raise ValueError(f"--tls-client-ca {paths[2]}: no PEM CA certificates in it "
                             f"({error.reason or error})") from None


def load_configuration(paths: Sequence[str]) -> grpc.ServerCertificateConfiguration:
    """paths: (certificate chain, key) or (certificate chain, key, client CA)."""
    named = list(zip(paths, FLAGS, strict=False))
    contents = [_read(path, flag) for path, flag in named]
    _check(paths)
    if [_read(path, flag) for path, flag in named] != contents:
        raise ValueError("the TLS files changed while being read")  # the next check reads again
    return grpc.ssl_server_certificate_configuration(
        [(contents[1], contents[0])], root_certificates=contents[2] if len(paths) > 2 else None)


class ServerTls:
    """The server's credentials, and the files they come from."""

    def __init__(self, config: ServerConfig):
        paths = [config.tls_cert, config.tls_key]
        if config.tls_client_ca:
            paths.append(config.tls_client_ca)
        self.client_certificates = config.tls_client_ca is not None
        self._files = WatchedFiles("TLS certificate files", paths, load_configuration)
        self._given = self._files.current()

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._given, self._fetch, require_client_authentication=self.client_certificates)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by grpc (on one of its threads) at each handshake."""
        current = self._files.current()
        if current is self._given:
            return None
        self._given = current
        return current

    def reload(self) -> bool:
        return self._files.reload()
