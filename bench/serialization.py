"""Packed float32 bytes vs `repeated float`: what each costs to build, serialise and parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import timeit

import numpy as np
from google.protobuf.internal import api_implementation

from clip_grpc.servicer import add_result
from clip_grpc.v1 import clip_pb2

FORMATS = {"packed": clip_pb2.EMBEDDING_FORMAT_PACKED_FLOAT32,
           "float_list": clip_pb2.EMBEDDING_FORMAT_FLOAT_LIST}


def _per_vector_us(function, vectors: int, repeat: int = 5) -> float:
    number = max(1, 2000 // vectors)
    best = min(timeit.repeat(function, number=number, repeat=repeat))
    return best / number / vectors * 1e6


def _to_numpy(name: str):
    if name == "packed":
        return lambda embedding: np.frombuffer(embedding.packed, "<f4")
    return lambda embedding: np.array(embedding.values, dtype=np.float32)


def measure_format(name: str, vectors: np.ndarray) -> dict:
    """Microseconds per vector for one response holding all of `vectors`."""
    fmt, batch = FORMATS[name], len(vectors)
    to_numpy = _to_numpy(name)

    def build():
        response = clip_pb2.EmbedStreamResponse()
        for i, v in enumerate(vectors):
            add_result(response.results, str(i), v, fmt)
        return response

    response = build()
    wire = response.SerializeToString()
    parsed = clip_pb2.EmbedStreamResponse.FromString(wire)
    assert np.array_equal(np.stack([to_numpy(r.embedding) for r in parsed.results]), vectors)
    row = {
        "build_us": _per_vector_us(build, batch),
        "serialise_us": _per_vector_us(response.SerializeToString, batch),
        "parse_us": _per_vector_us(lambda: clip_pb2.EmbedStreamResponse.FromString(wire), batch),
        "to_numpy_us": _per_vector_us(lambda: [to_numpy(r.embedding) for r in parsed.results],
                                      batch),
        "bytes_per_vector": len(wire) / batch,
    }
    row["server_total_us"] = row["build_us"] + row["serialise_us"]
    row["client_total_us"] = row["parse_us"] + row["to_numpy_us"]
    return row


def compare(dim: int, batch: int = 32) -> dict:
    vectors = np.random.default_rng(dim).standard_normal((batch, dim)).astype(np.float32)
    return {name: measure_format(name, vectors) for name in FORMATS}


def run(dims: tuple[int, ...] = (512, 768)) -> dict:
    results = {}
    for dim in dims:
        results[str(dim)] = rows = compare(dim)
        for name, row in rows.items():
            print(f"  {dim}-d {name:10}: build {row['build_us']:6.2f} us, serialise "
                  f"{row['serialise_us']:6.2f} us, parse {row['parse_us']:6.2f} us, to numpy "
                  f"{row['to_numpy_us']:6.2f} us, {row['bytes_per_vector']:.0f} B per vector",
                  flush=True)
    return results


def run_all() -> dict:
    """The protobuf backend in use here, then the pure-Python one (in a subprocess)."""
    backend = api_implementation.Type()
    print(f"  protobuf backend: {backend}", flush=True)
    results = {backend: run()}
    if backend != "python":
        print("  protobuf backend: python (PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python)",
              flush=True)
        output = subprocess.run(
            [sys.executable, "-m", "bench.serialization"], check=True, capture_output=True,
            text=True, env={**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"},
        ).stdout
        print("\n".join(line for line in output.splitlines() if line.startswith("  ")))
        results["python"] = json.loads(output.splitlines()[-1])
    return results


if __name__ == "__main__":
    print(json.dumps(run()))
