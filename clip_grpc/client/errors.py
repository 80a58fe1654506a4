"""Per-item failures and the exception that reports one."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

STATUS_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}


@dataclass(frozen=True)
class ItemFailure:
    """Why one item got no embedding: its position in the input, its id and the status."""

    index: int
    id: str
    code: grpc.StatusCode
    message: str
    field: str = ""

    @classmethod
    def from_proto(cls, index: int, item_id: str, error) -> ItemFailure:
        code = STATUS_BY_NUMBER.get(error.code, grpc.StatusCode.UNKNOWN)
        return cls(index, item_id, code, error.message, error.field)

    def __str__(self) -> str:
        where = f" ({self.field})" if self.field else ""
        return f"item {self.index} (id {self.id!r}){where}: {self.code.name}: {self.message}"


class ItemFailedError(Exception):
    """An item could not be embedded; `.failure` names it. Raised by `encode(errors="raise")`."""

    def __init__(self, failure: ItemFailure):
        super().__init__(str(failure))
        self.failure = failure
