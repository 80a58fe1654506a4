"""The one table from gRPC status codes to HTTP statuses, and the JSON error body.

Every error the bridge answers is an `ApiError`; its body is always
`{"error": {"code": ..., "message": ..., "field": ...}}`.
"""

from __future__ import annotations

import grpc
from tornado.web import HTTPError

# grpc-gateway's mapping (runtime/errors.go HTTPStatusFromCode), which is also Google's
# (google/rpc/code.proto).
GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

# Statuses whose answer carries Retry-After: the client may simply try again later.
RETRYABLE_STATUSES = frozenset({429, 503})

_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ApiError(HTTPError):
    """An error answered to the client as JSON. `code` is a gRPC code name (or, for errors
    only HTTP has, a name such as PAYLOAD_TOO_LARGE); `field` names the part of the request
    at fault, when there is one."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        # log_message=None: an expected error, not worth a warning with a traceback.
        super().__init__(status, reason=None)
        self.code = code
        self.message = message
        self.field = field
        # Extra answer headers (e.g. WWW-Authenticate on 401).
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}

    def __str__(self) -> str:
        return f"{self.status_code} {self.code}: {self.message}"


def http_status_for(code: grpc.StatusCode) -> int:
    return GRPC_TO_HTTP.get(code, 500)


def invalid_argument(message: str, field: str | None = None) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message, field)


def from_grpc_code(
    code: grpc.StatusCode, message: str, field: str | None = None
) -> ApiError:
    status = http_status_for(code)
    if status == 500:
        # Never pass an unexpected server failure through verbatim: it may carry internals.
        return ApiError(500, "INTERNAL", "the embedding server failed on this request", field)
    return ApiError(status, code.name, message, field)


def from_rpc_error(error: grpc.aio.AioRpcError) -> ApiError:
    """Maps a failed gRPC call to the HTTP answer, with a message a user can act on. The
    messages of connection failures are written here, never passed through: gRPC's own name
    the server's internal address (the bridge logs them instead)."""
    code = error.code()
    details = error.details() or ""
    if code is grpc.StatusCode.UNAVAILABLE:
        message = "the embedding server is unavailable (starting, stopping or unreachable); "
        message += "retry shortly"
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        message = "the embedding server did not answer in time"
    elif code is grpc.StatusCode.UNAUTHENTICATED:
        # The bridge's own token was refused: the HTTP client can do nothing about it.
        return ApiError(503, "UNAVAILABLE", "the bridge is not allowed to reach the embedding "
                        "server (its token was refused); retry later")
    else:
        message = details or code.name
    # The server names the request part at fault in trailing metadata (e.g. "candidates[1]").
    trailers = dict(error.trailing_metadata() or ())
    return from_grpc_code(code, message, trailers.get("clip-error-field") or None)


def from_item_error(code_number: int, message: str, field: str) -> ApiError:
    """Maps a per-item error of an EmbedResponse (ItemError.code is a gRPC code number)."""
    code = _CODE_BY_NUMBER.get(code_number, grpc.StatusCode.UNKNOWN)
    if code is grpc.StatusCode.OK:
        code = grpc.StatusCode.UNKNOWN
    return from_grpc_code(code, message, field)


def from_http_status(status: int, message: str) -> ApiError:
    """Errors raised by Tornado itself (404, 405, malformed requests)."""
    codes = {
        400: "INVALID_ARGUMENT",
        404: "NOT_FOUND",
        405: "METHOD_NOT_ALLOWED",
        408: "REQUEST_TIMEOUT",
        413: "PAYLOAD_TOO_LARGE",
        415: "UNSUPPORTED_MEDIA_TYPE",
        431: "REQUEST_HEADER_FIELDS_TOO_LARGE",
    }
    if status not in codes:
        return ApiError(500, "INTERNAL", "internal error in the REST bridge")
    return ApiError(status, codes[status], message)
