"""Output folders that can be appended to safely, so an interrupted run can resume.

A folder holds numbered parts, each written to a hidden temporary file and renamed into place:

- npy:     part-00000.npy (float32, shape (n, dim)) + part-00000.ids.jsonl (one JSON string
           per line, the ids of the rows in order). The ids file is renamed last: a part
           counts only once it exists, and an .npy without one is removed on resume.
- parquet: part-00000.parquet with columns id (string) and embedding (fixed_size_list<float>).
           `pyarrow.parquet.read_table(folder)` reads them all.

Shard i of n (`clip-embed --shard i/n`) names its parts part-s<i>of<n>-00000..., so shards
running side by side write into one folder without collisions; each skips the ids any part in
the folder already holds.

Items that failed are listed in _errors.jsonl (_errors-s<i>of<n>.jsonl for a shard; rewritten
by each run; failed items are tried again when the run is repeated).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

ERRORS_FILE = "_errors.jsonl"
_PART = re.compile(r"^part-((?:s\d+of\d+-)?)(\d{5,})\.(npy|ids\.jsonl|parquet)$")


class OutputError(Exception):
    """The output folder cannot be used as asked."""


def shard_tag(shard: tuple[int, int] | None) -> str:
    """The part name infix of shard (i, n): "s1of4-"; "" when not sharded."""
    return "" if shard is None else f"s{shard[0]}of{shard[1]}-"


def errors_file(shard: tuple[int, int] | None) -> str:
    return ERRORS_FILE if shard is None else f"_errors-{shard_tag(shard)[:-1]}.jsonl"


class PartWriter:
    """Buffers (id, vector) rows and writes them as parts of `chunk_size` rows, named with
    `tag` (see shard_tag)."""

    def __init__(self, folder: Path, fmt: str, chunk_size: int, tag: str = ""):
        if fmt not in ("npy", "parquet"):
            raise OutputError(f"unknown output format {fmt!r}: use npy or parquet")
        if fmt == "parquet":
            _require_pyarrow()
        self.folder, self.fmt, self.chunk_size, self.tag = folder, fmt, chunk_size, tag
        folder.mkdir(parents=True, exist_ok=True)
        other = "parquet" if fmt == "npy" else "npy"
        if _parts(folder, other):
            raise OutputError(f"{folder} already holds {other} parts; use --format {other}")
        self._next_part = (
            max((number for part_tag, number in _parts(folder) if part_tag == tag), default=-1) + 1
        )
        self._ids: list[str] = []
        self._vectors: list[np.ndarray] = []
        self.rows_written = 0

    def add(self, item_id: str, vector: np.ndarray) -> None:
        self._ids.append(item_id)
        self._vectors.append(vector)
        if len(self._ids) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        if not self._ids:
            return
        name = f"part-{self.tag}{self._next_part:05d}"
        matrix = np.stack(self._vectors).astype(np.float32, copy=False)
        if self.fmt == "npy":
            _write_atomically(self.folder / f"{name}.npy", lambda f: np.save(f, matrix))
            lines = "".join(json.dumps(item_id) + "\n" for item_id in self._ids)
            _write_atomically(self.folder / f"{name}.ids.jsonl", lambda f: f.write(lines.encode()))
        else:
            _write_parquet(self.folder / f"{name}.parquet", self._ids, matrix)
        self.rows_written += len(self._ids)
        self._next_part += 1
        self._ids, self._vectors = [], []


def done_ids(folder: Path, tag: str = "") -> set[str]:
    """Ids already written to `folder` by any shard (empty if it does not exist); drops the
    unfinished parts named with `tag` (others may belong to a shard still writing)."""
    for part_tag, number in _parts(folder, "npy") - _parts(folder, "ids.jsonl"):
        if part_tag == tag:
            (folder / f"part-{part_tag}{number:05d}.npy").unlink()
    return set(load_embeddings(folder, ids_only=True)[0])


def load_embeddings(
    folder: str | os.PathLike, *, ids_only: bool = False
) -> tuple[list[str], np.ndarray | None]:
    """All ids, in order, and an (n, dim) float32 matrix from an output folder of either
    format (None with ids_only)."""
    folder = Path(folder)
    ids: list[str] = []
    blocks: list[np.ndarray] = []
    for tag, number in sorted(_parts(folder, "ids.jsonl")):
        with open(folder / f"part-{tag}{number:05d}.ids.jsonl", encoding="utf-8") as file:
            ids.extend(json.loads(line) for line in file)
        if not ids_only:
            blocks.append(np.load(folder / f"part-{tag}{number:05d}.npy"))
    for tag, number in sorted(_parts(folder, "parquet")):
        import pyarrow.parquet as pq

        columns = ["id"] if ids_only else ["id", "embedding"]
        table = pq.read_table(folder / f"part-{tag}{number:05d}.parquet", columns=columns)
        ids.extend(table.column("id").to_pylist())
        if not ids_only:
            vectors = table.column("embedding").combine_chunks()
            blocks.append(
                vectors.flatten().to_numpy().reshape(len(vectors), vectors.type.list_size)
            )
    if ids_only:
        return ids, None
    return ids, np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)


def _parts(folder: Path, suffix: str | None = None) -> set[tuple[str, int]]:
    """(shard tag, number) of the finished part files with `suffix` (any suffix if None)."""
    if not folder.is_dir():
        return set()
    found = set()
    for entry in os.scandir(folder):
        match = _PART.match(entry.name)
        if match and suffix in (None, match.group(3)):
            found.add((match.group(1), int(match.group(2))))
    return found


def _write_atomically(path: Path, write) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _write_parquet(path: Path, ids: list[str], matrix: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
    table = pa.table({"id": pa.array(ids, pa.string()), "embedding": vectors})
    _write_atomically(path, lambda f: pq.write_table(table, f))


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise OutputError(
            "parquet output needs pyarrow: pip install 'clip-grpc[parquet]'"
        ) from None
