"""clip-embed: embed a dataset through a clip-grpc server into .npy or parquet parts.

    clip-embed photos/ -o photo-embeddings/                 # a folder of images, recursively
    clip-embed captions.txt -o caption-embeddings/          # one text per line
    clip-embed dataset.jsonl -o out/ --format parquet       # {"id": ..., "text" | "image": ...}
    clip-embed photos/ -o out/ --server dns:///clip:50051 --parallel-streams 4 --shard 0/8

Everything streams through EmbedStream with bounded memory. Re-running with the same output
folder skips the ids already written there, so an interrupted run resumes where it stopped
(see clip_grpc.embed_cli.outputs for the folder layout).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import zlib
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import grpc
from tqdm.auto import tqdm

from clip_grpc.client import Client, Outcome, StreamProtocolError
from clip_grpc.embed_cli.inputs import (
    IMAGE_EXTENSIONS,
    Record,
    count_records,
    input_kind,
    read_records,
)
from clip_grpc.embed_cli.outputs import OutputError, PartWriter, done_ids, errors_file, shard_tag
from clip_grpc.token_file import secret_lines

__all__ = ["main"]
_ERRORS_SHOWN = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="clip-embed",
        description="Embed a folder of images, a text file (one text per line) or a JSONL file "
        "through a clip-grpc server. Re-running with the same output skips ids already written.",
    )
    parser.add_argument("input", type=Path, help="image folder, .txt (one text per line), .jsonl")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--format", choices=("npy", "parquet"), default="npy")
    parser.add_argument(
        "--input-kind",
        choices=("images", "lines", "jsonl"),
        help="override the kind guessed from the input path",
    )
    parser.add_argument(
        "--extensions",
        default=",".join(IMAGE_EXTENSIONS),
        help="image extensions searched in a folder (comma-separated)",
    )
    parser.add_argument(
        "--server",
        action="append",
        help="host:port, grpc://host:port, grpcs://host:port, dns:///name:port, or several "
        "replicas as host1:port,host2:port (or --server repeated); calls are balanced "
        "round_robin [env CLIP_GRPC_TARGET; 127.0.0.1:50051]",
    )
    parser.add_argument(
        "--parallel-streams",
        type=_positive_int,
        default=1,
        help="EmbedStreams at once, spread over the replicas (default 1)",
    )
    parser.add_argument(
        "--connections",
        type=_positive_int,
        help="gRPC channels, each its own HTTP/2 connection (default: one per parallel stream "
        "for one host:port, so the streams reach different workers of a server run with "
        "--workers; one for a list or dns:///, whose round_robin spreads the streams)",
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="embed only shard I of N (0 <= I < N, split by a hash of each id); shards can run "
        "side by side into one output folder",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CLIP_GRPC_TOKEN"),
        help="bearer token sent as authorization metadata [env CLIP_GRPC_TOKEN]",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=os.environ.get("CLIP_GRPC_TOKEN_FILE"),
        help="file whose first line (# comments skipped) is the token, instead of --token "
        "[env CLIP_GRPC_TOKEN_FILE]",
    )
    parser.add_argument("--tls", action="store_true", help="use TLS (system roots by default)")
    parser.add_argument("--root-certs", type=Path, help="PEM file of roots to trust (implies TLS)")
    parser.add_argument(
        "--client-cert", type=Path, help="PEM certificate chain presented to the server (mTLS)"
    )
    parser.add_argument("--client-key", type=Path, help="PEM private key of --client-cert")
    parser.add_argument("--batch-size", type=int, default=32, help="items per stream message")
    parser.add_argument(
        "--max-in-flight", type=int, default=256, help="items sent and not yet answered"
    )
    parser.add_argument("--chunk-size", type=int, default=10_000, help="rows per output part")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for each answer"
    )
    parser.add_argument(
        "--retry-budget",
        type=float,
        default=120.0,
        help="seconds to keep retrying while the server is unavailable (default 120)",
    )
    parser.add_argument("--retries", type=int, help="also stop after this many retries in a row")
    parser.add_argument("--raw", action="store_true", help="raw features, not L2-normalised")
    parser.add_argument(
        "--truncate",
        action="store_true",
        help="cut texts longer than the model's context instead of failing them",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    args = parser.parse_args(argv)
    if (args.client_cert is None) != (args.client_key is None):
        parser.error("--client-cert and --client-key go together")
    if args.token_file is not None:
        args.token = _token_from(parser, args.token_file)
    args.server = _targets(args.server or [os.environ.get("CLIP_GRPC_TARGET", "127.0.0.1:50051")])
    return args  # fmt: skip


def _token_from(parser: argparse.ArgumentParser, path: Path) -> str:
    try:
        lines = secret_lines(path)
    except (OSError, UnicodeDecodeError) as error:
        parser.error(f"--token-file {path}: cannot be read ({error})")
    if not lines:
        parser.error(f"--token-file {path} holds no token")
    return lines[0]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _shard(text: str) -> tuple[int, int]:
    index, slash, count = text.partition("/")
    if not (slash and index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, e.g. 0/4, not {text!r}")
    return int(index), int(count)


def _targets(values: list[str]) -> str | list[str]:
    """One --server value as it is (it may be dns:/// or a comma list); several as a list."""
    if len(values) == 1:
        return values[0]
    return [part for value in values for part in value.split(",") if part.strip()]


def in_shard(item_id: str, shard: tuple[int, int] | None) -> bool:
    """Whether `item_id` belongs to `shard` (i, n): a stable hash of the id, so the split is
    the same on every machine and run, whatever the order of the input."""
    return shard is None or zlib.crc32(item_id.encode("utf-8")) % shard[1] == shard[0]


class Todo:
    """The input records not written yet, as items for Client.stream. Iterated on the client's
    worker thread: skipped ids are counted and unusable records queued for the main thread."""

    def __init__(self, args: argparse.Namespace, kind: str, done: set[str]):
        self._args, self._kind, self._done = args, kind, done
        self._extensions = tuple(e.strip() for e in args.extensions.split(",") if e.strip())
        self.skipped = 0
        self.problems: deque[Record] = deque()
        self._length = self._count() if args.progress else None

    def __iter__(self) -> Iterator:
        for record in read_records(self._args.input, self._kind, self._extensions):
            if not in_shard(record.id, self._args.shard):
                continue
            if record.id in self._done:
                self.skipped += 1
            elif record.problem:
                self.problems.append(record)
            else:
                yield record.item

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("length not counted")
        return self._length

    def _count(self) -> int:
        if not self._done and self._kind != "jsonl" and self._args.shard is None:
            return count_records(self._args.input, self._kind, self._extensions)
        records = read_records(self._args.input, self._kind, self._extensions)
        return sum(
            1 for r in records
            if in_shard(r.id, self._args.shard) and r.id not in self._done and not r.problem
        )  # fmt: skip


class ErrorLog:
    """Failed items go to _errors.jsonl; the first few are also shown."""

    def __init__(self, path: Path):
        self._file = open(path, "w", encoding="utf-8")
        self.count = 0

    def add(self, item_id: str, code: str, message: str) -> None:
        self.count += 1
        self._file.write(json.dumps({"id": item_id, "code": code, "message": message}) + "\n")
        if self.count <= _ERRORS_SHOWN:
            tqdm.write(f"clip-embed: {item_id}: {code}: {message}", file=sys.stderr)

    def close(self) -> None:
        self._file.close()


def run(args: argparse.Namespace) -> int:
    kind = args.input_kind or input_kind(args.input)
    tag = shard_tag(args.shard)
    client = Client(
        args.server, batch_size=args.batch_size, max_in_flight=args.max_in_flight,
        timeout=args.timeout, retry_budget=args.retry_budget, retries=args.retries,
        token=args.token, tls=True if args.tls else None, root_certificates=args.root_certs,
        certificate_chain=args.client_cert, private_key=args.client_key,
        connections=args.connections,
    )  # fmt: skip
    done = done_ids(args.output, tag)
    writer = PartWriter(args.output, args.format, args.chunk_size, tag)
    todo = Todo(args, kind, done)
    errors_path = args.output / errors_file(args.shard)
    errors = ErrorLog(errors_path)
    started = time.perf_counter()
    try:
        outcomes = client.stream(
            todo, raw=args.raw, truncate=args.truncate, show_progress=args.progress,
            parallel_streams=args.parallel_streams,
        )  # fmt: skip
        for outcome in outcomes:
            _log_problems(todo, errors)
            _keep(outcome, writer, errors)
        _log_problems(todo, errors)
    finally:
        writer.flush()  # what was embedded before an interruption is kept for the next run
        errors.close()
        client.close()
    seconds = time.perf_counter() - started
    items = writer.rows_written + errors.count
    shard = f" (shard {args.shard[0]}/{args.shard[1]})" if args.shard else ""
    print(
        f"clip-embed: {items} items{shard}, {errors.count} errors, {todo.skipped} skipped "
        f"(already in {args.output}), {seconds:.1f} s, {items / max(seconds, 1e-9):.1f} items/s"
    )
    if errors.count:
        print(f"clip-embed: failed items are listed in {errors_path}")
    return 1 if errors.count else 0


def _keep(outcome: Outcome, writer: PartWriter, errors: ErrorLog) -> None:
    if outcome.error is None:
        writer.add(outcome.id, outcome.embedding)
    else:
        errors.add(outcome.id, outcome.error.code.name, outcome.error.message)


def _log_problems(todo: Todo, errors: ErrorLog) -> None:
    while todo.problems:
        record = todo.problems.popleft()
        errors.add(record.id, grpc.StatusCode.INVALID_ARGUMENT.name, record.problem)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 all embedded, 1 some items failed or the server failed, 2 bad usage,
    130 interrupted."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="clip-embed: %(message)s")
    try:
        return run(args)
    except (OutputError, FileNotFoundError, NotADirectoryError, ValueError) as error:
        print(f"clip-embed: {error}", file=sys.stderr)
        return 2
    except grpc.RpcError as error:
        print(f"clip-embed: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except (TimeoutError, StreamProtocolError) as error:
        print(f"clip-embed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("clip-embed: interrupted; run again to resume", file=sys.stderr)
        return 130
