"""What the client hands back: per-item outcomes, encode results and rank matches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc
import numpy as np

from clip_grpc.client.batches import Batch
from clip_grpc.client.errors import ItemFailure
from clip_grpc.client.stream import StreamProtocolError
from clip_grpc.v1 import clip_pb2


@dataclass(frozen=True, slots=True)
class Outcome:
    """One input's result: `embedding` (float32, shape (dim,)) or `error`, never both."""

    index: int
    id: str
    embedding: np.ndarray | None
    error: ItemFailure | None


class EncodeResult(NamedTuple):
    """`encode(errors="return")`: rows of failed items are NaN and listed in `errors`."""

    embeddings: np.ndarray
    errors: list[ItemFailure]

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the rows that hold an embedding."""
        mask = np.ones(len(self.embeddings), dtype=bool)
        mask[[failure.index for failure in self.errors]] = False
        return mask


@dataclass(frozen=True)
class Match:
    """One ranked candidate; `candidate` is the object given to `rank`."""

    index: int
    id: str
    candidate: Any = field(repr=False)
    cosine: float
    probability: float
    score: int


def outcomes(batch: Batch, results: Sequence[clip_pb2.EmbedResult] | None) -> list[Outcome]:
    """Merge a batch's local failures with the server's results, in input order."""
    answered = iter(zip(batch.request.items, results or (), strict=True))
    merged = []
    for offset in range(batch.size):
        index = batch.start + offset
        failure = batch.failures.get(offset)
        if failure is None:
            item, result = next(answered)
            merged.append(_outcome(index, item, result))
        else:
            merged.append(Outcome(index, failure.id, None, failure))
    return merged


def _outcome(index: int, item: clip_pb2.Item, result: clip_pb2.EmbedResult) -> Outcome:
    if result.id != item.id:
        raise StreamProtocolError(f"result id {result.id!r} for item {index} (id {item.id!r})")
    outcome = result.WhichOneof("outcome")
    if outcome == "embedding":
        return Outcome(index, item.id, vector(result.embedding), None)
    if outcome == "error":
        return Outcome(index, item.id, None, ItemFailure.from_proto(index, item.id, result.error))
    failure = ItemFailure(
        index, item.id, grpc.StatusCode.INTERNAL, "the server sent neither embedding nor error"
    )
    return Outcome(index, item.id, None, failure)


def vector(embedding: clip_pb2.Embedding) -> np.ndarray:
    """The numbers of an Embedding, whichever format carries them."""
    if embedding.packed:
        values = np.frombuffer(embedding.packed, dtype="<f4").astype(np.float32, copy=False)
    else:
        values = np.asarray(embedding.values, dtype=np.float32)
    if values.shape[0] != embedding.dim:
        raise StreamProtocolError(
            f"an embedding of {values.shape[0]} values says dim {embedding.dim}"
        )
    return values


def stack(vectors: list[np.ndarray | None], dim: int) -> np.ndarray:
    """(n, dim) float32; rows without a vector are NaN."""
    out = np.full((len(vectors), dim), np.nan, dtype=np.float32)
    filled = [row for row, value in enumerate(vectors) if value is not None]
    if filled:
        out[filled] = np.stack([vectors[row] for row in filled])
    return out
