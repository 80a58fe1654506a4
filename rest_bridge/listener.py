"""The bridge's HTTP(S) server: Tornado's, with JSON 431 answers for oversized request
heads, connection timeouts, and a TLS context that follows its files."""

from __future__ import annotations

import json
import ssl
import uuid

from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.web import Application

from clip_grpc.watched_file import WatchedFiles
from rest_bridge.config import BridgeConfig
from rest_bridge.tls import watched_context

# Heads up to this many times --max-header-bytes are read and answered 431; Tornado closes
# the connection on larger ones without an answer (it will not buffer without bound).
HEAD_READ_FACTOR = 4
# Tornado's own body timeout, a backstop behind the handlers' 408 (and the only one for
# handlers that do not stream their body).
BODY_TIMEOUT_BACKSTOP_S = 5.0


def head_size(start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders) -> int:
    """Bytes of the request head, as sent, give or take a little whitespace."""
    size = len(start_line.method) + len(start_line.path) + len(start_line.version) + 4
    return size + sum(len(name) + len(value) + 4 for name, value in headers.get_all())


class _HeadLimit(httputil.HTTPMessageDelegate):
    """Answers 431 (JSON, then closes) when the request head is over the limit; otherwise
    passes everything to the application."""

    def __init__(self, delegate, connection, limit: int):
        self.delegate = delegate
        self.connection = connection
        self.limit = limit
        self.refused = False

    def headers_received(self, start_line, headers):
        size = head_size(start_line, headers)
        if size <= self.limit:
            return self.delegate.headers_received(start_line, headers)
        self.refused = True
        body = json.dumps({"error": {
            "code": "REQUEST_HEADER_FIELDS_TOO_LARGE",
            "message": f"the request head is {size} bytes, over the limit of {self.limit}",
            "field": None,
        }}).encode()
        self.connection.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", 431, "Request Header Fields Too Large"),
            httputil.HTTPHeaders({
                "Content-Type": "application/json", "Content-Length": str(len(body)),
                "Connection": "close", "request_id": str(uuid.uuid4()),
            }),
            body,
        )
        self.connection.finish()
        return None

    def data_received(self, chunk):
        return None if self.refused else self.delegate.data_received(chunk)

    def finish(self):
        if not self.refused:
            self.delegate.finish()

    def on_connection_close(self):
        if not self.refused:
            self.delegate.on_connection_close()


class BridgeHTTPServer(HTTPServer):
    def initialize(
        self, *args, max_head_bytes: int, tls: WatchedFiles[ssl.SSLContext] | None, **kwargs
    ) -> None:
        self._max_head_bytes = max_head_bytes
        self._tls = tls
        super().initialize(*args, ssl_options=None, **kwargs)

    # TCPServer wraps each new connection with `self.ssl_options`: the current context.
    @property
    def ssl_options(self) -> ssl.SSLContext | None:
        return self._tls.current() if self._tls is not None else None

    @ssl_options.setter
    def ssl_options(self, value) -> None:
        if value is not None:
            raise ValueError("the bridge's TLS context comes from its certificate files")

    def reload_tls(self) -> None:
        if self._tls is not None:
            self._tls.reload()

    def start_request(self, server_conn, request_conn):
        delegate = super().start_request(server_conn, request_conn)
        return _HeadLimit(delegate, request_conn, self._max_head_bytes)


def make_http_server(app: Application, config: BridgeConfig) -> BridgeHTTPServer:
    """The POST handlers stream their bodies and enforce max_body_bytes themselves (to answer
    413); Tornado's limit covers the rest."""
    return BridgeHTTPServer(
        app,
        max_head_bytes=config.max_header_bytes,
        tls=watched_context(config),
        max_body_size=config.max_body_bytes,
        max_header_size=HEAD_READ_FACTOR * config.max_header_bytes,
        idle_connection_timeout=config.idle_timeout_s,
        body_timeout=config.body_timeout_s + BODY_TIMEOUT_BACKSTOP_S,
    )
