"""make_app(config, backend): the route table of the bridge."""

from __future__ import annotations

import functools

from tornado.web import Application

from rest_bridge.auth import BridgeAuth
from rest_bridge.backend import ClipBackend
from rest_bridge.config import BridgeConfig
from rest_bridge.drain import Drain
from rest_bridge.handlers.base import NotFoundHandler
from rest_bridge.handlers.clip_form import ClipFormHandler
from rest_bridge.handlers.embed import EmbedHandler
from rest_bridge.handlers.health import HealthzHandler, ReadyzHandler
from rest_bridge.handlers.info import InfoHandler
from rest_bridge.handlers.jina_http import DefaultHandler, PostHandler
from rest_bridge.handlers.metrics import MetricsHandler
from rest_bridge.handlers.openai_embeddings import EmbeddingsHandler, ModelHandler, ModelsHandler
from rest_bridge.handlers.openapi import OpenApiHandler
from rest_bridge.handlers.pages import page_routes
from rest_bridge.handlers.rank import RankHandler
from rest_bridge.handlers.shared_routes import EncodeRouteHandler, RankRouteHandler
from rest_bridge.limits import RequestLimits
from rest_bridge.listener import make_http_server
from rest_bridge.metrics import BridgeMetrics
from rest_bridge.request_log import record_request

HANDLERS = (
    ClipFormHandler,
    EmbedHandler,
    RankHandler,
    InfoHandler,
    HealthzHandler,
    ReadyzHandler,
    MetricsHandler,
    OpenApiHandler,
    EmbeddingsHandler,
    ModelsHandler,
    ModelHandler,
    EncodeRouteHandler,
    RankRouteHandler,
    PostHandler,
    DefaultHandler,
)


def make_app(
    config: BridgeConfig, backend: ClipBackend, metrics: BridgeMetrics | None = None
) -> Application:
    metrics = metrics if metrics is not None else BridgeMetrics()
    collaborators = {"config": config, "backend": backend, "metrics": metrics}
    app = Application(
        [(handler.route, handler, collaborators) for handler in HANDLERS] + page_routes(),
        default_handler_class=NotFoundHandler,
        default_handler_args=collaborators,
        log_function=functools.partial(record_request, metrics),
        # Every handler's API-key check and bounds (handlers/base.py).
        auth=BridgeAuth(config),
        limits=RequestLimits(config),
        drain=Drain(),
    )
    app.metrics = metrics
    return app


__all__ = ["HANDLERS", "make_app", "make_http_server"]
