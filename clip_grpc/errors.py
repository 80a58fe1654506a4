"""Domain errors, and the one table mapping them to gRPC status codes."""

from __future__ import annotations

import grpc


class ClipError(Exception):
    """An error with a message meant for the caller, and the input part at fault."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(ClipError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Overloaded(ClipError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class ShuttingDown(ClipError):
    code = grpc.StatusCode.UNAVAILABLE


class ModelLoadError(Exception):
    """The model folder is missing something or does not hold a supported model."""


class StartupError(Exception):
    """The server cannot start as configured; the message names the flag at fault."""


def grpc_code(error: BaseException) -> grpc.StatusCode:
    return error.code if isinstance(error, ClipError) else grpc.StatusCode.INTERNAL


def public_message(error: BaseException) -> str:
    """What the caller may read: our own messages, never internals of unexpected errors."""
    return error.message if isinstance(error, ClipError) else "internal error"
