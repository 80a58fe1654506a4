"""GET / (the playground), GET /docs (Swagger UI over /openapi.json) and their static files.

Everything is served from installed packages (this one's `static/` folder and swagger-ui-py's
copy of Swagger UI), so the pages work offline and load nothing from elsewhere."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tornado.web import RequestHandler, StaticFileHandler

from rest_bridge.status_map import from_http_status
from rest_bridge.vectors import dump_json

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# The pages run only the bridge's own scripts and talk only to the bridge. Swagger UI sets
# inline styles, hence 'unsafe-inline' for styles (never for scripts); blob: and data: images are
# the playground's thumbnails.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def swagger_ui_dir() -> Path:
    """Swagger UI's static files as swagger-ui-py ships them (found without importing it)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (pip install swagger-ui-py)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def _secure(handler: RequestHandler) -> None:
    handler.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Referrer-Policy", "no-referrer")


class _JsonErrors:
    """Errors (a missing file, a wrong method) in the bridge's JSON shape, as on every route."""

    def write_error(self, status_code: int, **kwargs) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(dump_json(from_http_status(status_code, self._reason).body()))


class PageHandler(_JsonErrors, RequestHandler):
    """One HTML file of static/, named by the route's `page` argument."""

    def initialize(self, page: str, route: str) -> None:
        self.page = STATIC_DIR / page
        self.route = route  # the label of logs and metrics

    def get(self) -> None:
        _secure(self)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(self.page.read_bytes())


class AssetHandler(_JsonErrors, StaticFileHandler):
    def initialize(self, path: str, route: str) -> None:
        super().initialize(path)
        self.route = route

    def set_extra_headers(self, path: str) -> None:
        _secure(self)


def page_routes() -> list[tuple]:
    return [
        (r"/", PageHandler, {"page": "index.html", "route": "/"}),
        (r"/docs/?", PageHandler, {"page": "docs.html", "route": "/docs"}),
        (r"/static/(.+)", AssetHandler, {"path": str(STATIC_DIR), "route": "/static"}),
        (r"/docs/assets/(.+)", AssetHandler,
         {"path": str(swagger_ui_dir()), "route": "/docs/assets"}),
    ]
