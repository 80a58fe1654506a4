"""One structured log line and one set of metric updates per answered request.

The line's fields ride on the record (`extra`), so the shared formatter (clip_grpc.logs) writes
them as top-level keys of the JSON object, as the server's access log does.
"""

from __future__ import annotations

import logging

from rest_bridge.metrics import BridgeMetrics

access_log = logging.getLogger("rest_bridge.access")


def record_request(metrics: BridgeMetrics, handler) -> None:
    """Tornado's `log_function`: called once for each request when its answer is finished."""
    status = handler.get_status()
    seconds = handler.request.request_time()
    route = getattr(handler, "route", "unmatched")
    images = getattr(handler, "images", 0)
    texts = getattr(handler, "texts", 0)
    metrics.record(route, handler.request.method, status, seconds, images, texts)

    line = {
        "request_id": getattr(handler, "request_id", None),
        "method": handler.request.method,
        "route": route,
        "status": status,
        "images": images,
        "texts": texts,
        "latency_ms": round(seconds * 1000, 2),
    }
    error = getattr(handler, "error", None)
    if error is not None:
        line["error_code"] = error.code
        line["error_field"] = error.field
        line["error_message"] = error.message
    level = logging.WARNING if status >= 500 else logging.INFO
    access_log.log(level, "request", extra=line)
