"""Cut a lazy stream of inputs into EmbedStream request messages."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from clip_grpc.client.errors import ItemFailure
from clip_grpc.client.items import to_item
from clip_grpc.v1 import clip_pb2


@dataclass
class Batch:
    """Consecutive inputs from `start`: the ones to send, and those that failed locally."""

    start: int
    request: clip_pb2.EmbedStreamRequest
    failures: dict[int, ItemFailure] = field(default_factory=dict)  # by offset from start
    size: int = 0
    request_bytes: int = 0

    @property
    def sends_nothing(self) -> bool:
        return not self.request.items


class Batcher:
    """Turns inputs into Batches of at most `batch_size` items and, unless a single item is
    bigger, at most `max_request_bytes` bytes per message."""

    def __init__(self, options: clip_pb2.EmbedOptions, batch_size: int, max_request_bytes: int):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._options = options
        self._batch_size = batch_size
        self._max_request_bytes = max_request_bytes
        self._next_index = 0
        self._open = self._new_batch()

    def add(self, obj: Any) -> list[Batch]:
        """Add one input; return the batches it completed (usually none)."""
        converted = to_item(obj, self._next_index)
        done = []
        item_bytes = 0 if isinstance(converted, ItemFailure) else converted.ByteSize()
        if self._open.size and self._open.request_bytes + item_bytes > self._max_request_bytes:
            done.append(self._close())
        batch = self._open
        if isinstance(converted, ItemFailure):
            batch.failures[batch.size] = converted
        else:
            batch.request.items.append(converted)
            batch.request_bytes += item_bytes
        batch.size += 1
        self._next_index += 1
        if batch.size >= self._batch_size:
            done.append(self._close())
        return done

    def fill(self, inputs: Iterator[Any]) -> list[Batch]:
        """Pull inputs until at least one batch is complete; [] once `inputs` is exhausted."""
        for obj in inputs:
            done = self.add(obj)
            if done:
                return done
        return self.flush()

    def flush(self) -> list[Batch]:
        """The last, partly filled batch, if any."""
        return [self._close()] if self._open.size else []

    def _close(self) -> Batch:
        batch, self._open = self._open, self._new_batch()
        return batch

    def _new_batch(self) -> Batch:
        request = clip_pb2.EmbedStreamRequest(options=self._options)
        return Batch(start=self._next_index, request=request)
