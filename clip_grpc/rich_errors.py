"""Whole-RPC errors in the standard rich error model, readable from any gRPC language.

Next to the status code and message, the trailers carry `grpc-status-details-bin`: a
`google.rpc.Status` whose details hold a `google.rpc.BadRequest` with one `FieldViolation`
(field: the request part at fault, e.g. "candidates[1].image"; description: why) when the input
is at fault. Go (status.FromError), Java (StatusProto.fromThrowable), Node (@grpc/grpc-js's
metadata + google-protobuf) and Python (grpc_status.rpc_status.from_call) read it.
`clip-error-field` (the field alone, our older trailer) stays for existing users.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"  # the key every gRPC library reads google.rpc.Status from
FIELD_KEY = "clip-error-field"


def rich_status(code: grpc.StatusCode, message: str, field: str = "") -> status_pb2.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    if field and code == grpc.StatusCode.INVALID_ARGUMENT:
        details = any_pb2.Any()
        details.Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
        ]))
        status.details.append(details)
    return status


def error_trailers(code: grpc.StatusCode, message: str, field: str = "") -> tuple:
    """Trailing metadata for aborting with `code` and `message` (the same in the Status)."""
    trailers = [(DETAILS_KEY, rich_status(code, message, field).SerializeToString())]
    if field:
        trailers.append((FIELD_KEY, field))
    return tuple(trailers)
