"""Embed one column of a Ray Data batch through the clip-grpc service, for `map_batches`.

    import ray
    from clip_grpc.integrations.ray import EmbedBatch

    ds = ray.data.read_parquet("captions.parquet")          # columns: id, caption
    ds = ds.map_batches(
        EmbedBatch,
        fn_constructor_kwargs=dict(target="dns:///clip.default.svc:50051", column="caption",
                                   kind="text", id_column="id"),
        compute=ray.data.ActorPoolStrategy(size=4),  # 4 actors, one Client each
        batch_size=256,
    )
    ds.write_parquet("embedded/")

A plain callable class: nothing here imports Ray (or pandas), so the same object serves Spark's
`mapInPandas` (see docs/ray.md). It takes a batch as Ray hands it over, a dict of numpy arrays
(batch_format "numpy"/"default") or a pandas DataFrame ("pandas"), and returns it with two more
columns: `output_column`, float32 embeddings (a (rows, dim) array, or one array per row in a
DataFrame), and `error_column`.

Per-row failures (an unreadable image, a text too long, a null) do not fail the batch: the row's
embedding is NaN and its error column holds "CODE: message" (None for rows that worked). One
corrupt file among millions must not stop a job of hours, and a deterministic failure retried
by Ray would fail again; the rows stay in the output, so they are found with a filter and fixed
or dropped. `errors="raise"` instead raises ItemFailedError naming the first failed row (its
`id_column` value) for jobs that must be all-or-nothing. Failures of the service itself (no
replica answering within the Client's retry budget) always raise: Ray retries the task.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import grpc
import numpy as np

from clip_grpc.client import Client, Image, ItemFailedError, ItemFailure, Text

_WRAP = {"auto": lambda value: value, "text": Text, "image": Image}
_ACCEPTED = {
    "auto": ((str, bytes, bytearray, memoryview, os.PathLike), "a text, image bytes or a path"),
    "text": ((str,), "a text (str)"),
    "image": ((str, bytes, bytearray, memoryview, os.PathLike), "image bytes or a path"),
}


class EmbedBatch:
    """Adds the embeddings of `column` to each batch, through one `Client` per instance.

    `target`: the service, as `Client` takes it ("dns:///name:port", "h1:50051,h2:50051", a
    list); `column`: the input column; `kind`: "text", "image" (encoded bytes or a file path)
    or "auto" (`Client.encode`'s rule: bytes and existing file paths are images, other str
    texts); `output_column`, `error_column`: the columns added; `id_column`: a column naming
    each row in errors (default: the row's position in its batch); `errors`: "column" (default)
    or "raise"; `raw`, `truncate`, `parallel_streams`: as in `Client.encode`. Any other keyword
    (batch_size, max_in_flight, timeout, retry_budget, token, tls, ...) goes to `Client`.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        column: str = "item",
        kind: Literal["auto", "text", "image"] = "auto",
        output_column: str = "embedding",
        error_column: str = "embedding_error",
        id_column: str | None = None,
        errors: Literal["column", "raise"] = "column",
        raw: bool = False,
        truncate: bool = False,
        parallel_streams: int = 1,
        **client_options: Any,
    ):
        if kind not in _WRAP:
            raise ValueError(f'kind must be "auto", "text" or "image", not {kind!r}')
        if errors not in ("column", "raise"):
            raise ValueError(f'errors must be "column" or "raise", not {errors!r}')
        if column in (output_column, error_column):
            raise ValueError(f"output_column and error_column must differ from column {column!r}")
        if parallel_streams < 1:
            raise ValueError("parallel_streams must be at least 1")
        self.column, self.kind, self.id_column = column, kind, id_column
        self.output_column, self.error_column, self.errors = output_column, error_column, errors
        self._encode_options = dict(raw=raw, truncate=truncate, parallel_streams=parallel_streams)
        self._target, self._client_options = target, client_options
        self._client = Client(target, **client_options)

    def __call__(self, batch: Mapping[str, np.ndarray] | Any) -> dict[str, np.ndarray] | Any:
        values = _column(batch, self.column)
        ids = _column(batch, self.id_column) if self.id_column else range(len(values))
        items, rows, failures = [], [], {}
        for row, value in enumerate(values):
            problem = _not_an_item(value, self.kind)
            if problem:
                failures[row] = ItemFailure(
                    row, str(ids[row]), grpc.StatusCode.INVALID_ARGUMENT, problem, self.column
                )
            else:
                items.append(_WRAP[self.kind](value))
                rows.append(row)
        result = self._client.encode(items, errors="return", **self._encode_options)
        embeddings = np.full((len(values), result.embeddings.shape[1]), np.nan, dtype=np.float32)
        embeddings[rows] = result.embeddings
        for failure in result.errors:
            row = rows[failure.index]
            failures[row] = ItemFailure(
                row, str(ids[row]), failure.code, failure.message, failure.field
            )
        if failures and self.errors == "raise":
            raise ItemFailedError(failures[min(failures)])
        added: dict[str, Any] = {self.output_column: embeddings}
        if self.errors == "column":
            reasons = np.full(len(values), None, dtype=object)
            for row, failure in failures.items():
                reasons[row] = f"{failure.code.name}: {failure.message}"
            added[self.error_column] = reasons
        return _with_columns(batch, added)

    def close(self) -> None:
        """Close the Client's channel and thread (an actor's end does it too)."""
        self._client.close()

    # Spark and other engines pickle the callable to send it to their workers: the Client (a
    # channel and a thread) is not sent but made anew on the other side.
    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "_client"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client = Client(self._target, **self._client_options)


def _column(batch: Any, name: str) -> list[Any]:
    """The values of column `name` as Python objects (numpy strings become str)."""
    if not isinstance(batch, Mapping) and not hasattr(batch, "assign"):
        raise TypeError(
            f"EmbedBatch takes a dict of numpy arrays or a pandas DataFrame, not "
            f"{type(batch).__name__}: use map_batches(batch_format='numpy' or 'pandas')"
        )
    columns = list(batch.keys())
    if name not in columns:
        raise KeyError(f"the batch has no column {name!r}; its columns: {columns}")
    return list(batch[name].tolist())


def _not_an_item(value: Any, kind: str) -> str | None:
    """Why `value` cannot be embedded as `kind`, or None when it can."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no value (null)"
    types, expected = _ACCEPTED[kind]
    if not isinstance(value, types):
        return f"expected {expected}, got {type(value).__name__}"
    return None


def _with_columns(batch: Any, added: dict[str, np.ndarray]) -> Any:
    if isinstance(batch, Mapping):
        return {**batch, **added}
    # A DataFrame: one value per row, so a (rows, dim) array becomes a column of (dim,) arrays.
    per_row = {}
    for name, values in added.items():
        if values.ndim == 2:
            column = np.empty(len(values), dtype=object)
            for row, vector in enumerate(values):
                column[row] = vector
            values = column
        per_row[name] = values
    return batch.assign(**per_row)
