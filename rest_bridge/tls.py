"""The HTTPS listener's TLS context: certificate chain and key, and for mTLS the CA that
client certificates must be signed by. Rebuilt whole on reload (new connections get it)."""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from clip_grpc.watched_file import WatchedFiles
from rest_bridge.config import BridgeConfig


def server_context(paths: Sequence[str]) -> ssl.SSLContext:
    """paths: (certificate chain, key) or (certificate chain, key, client CA)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(paths[0], paths[1])
    if len(paths) > 2:
        # Only this CA: never the system's roots, or any public CA's customer would get in.
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=paths[2])
    return context


def watched_context(config: BridgeConfig) -> WatchedFiles[ssl.SSLContext] | None:
    if not config.https:
        return None
    paths = [config.tls_cert, config.tls_key]
    if config.tls_client_ca:
        paths.append(config.tls_client_ca)
    return WatchedFiles("TLS certificate files", paths, server_context)
