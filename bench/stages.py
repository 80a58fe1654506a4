"""Where the time goes: the cost of each server-side step for one item, measured alone."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from clip_grpc.model.encoder import Encoder
from clip_grpc.model.images import decode_image
from clip_grpc.model.texts import TextTokenizer
from clip_grpc.servicer import add_result
from clip_grpc.v1 import clip_pb2

NO_LIMIT = 1 << 40


def ms_per_call(step: Callable, inputs: Sequence, min_seconds: float = 0.5) -> float:
    """Mean wall time of step(x) over inputs, repeated for at least min_seconds, in ms."""
    step(inputs[0])
    calls, started = 0, time.perf_counter()
    while calls < len(inputs) or time.perf_counter() - started < min_seconds:
        step(inputs[calls % len(inputs)])
        calls += 1
    return (time.perf_counter() - started) * 1000 / calls


def serialisation_ms(dim: int, batch: int = 32) -> dict:
    """Per item: building the result and serialising the response (server), parsing it and
    reading the vector (client), as the servicer and a numpy client do."""
    vectors = np.random.default_rng(0).standard_normal((batch, dim)).astype(np.float32)

    def build_and_serialise(_):
        response = clip_pb2.EmbedStreamResponse()
        for i, v in enumerate(vectors):
            add_result(response.results, str(i), v, clip_pb2.EMBEDDING_FORMAT_PACKED_FLOAT32)
        return response.SerializeToString()

    wire = build_and_serialise(None)

    def parse_and_read(_):
        response = clip_pb2.EmbedStreamResponse.FromString(wire)
        return [np.frombuffer(r.embedding.packed, "<f4") for r in response.results]

    return {"serialise_ms": ms_per_call(build_and_serialise, [None]) / batch,
            "parse_ms": ms_per_call(parse_and_read, [None]) / batch}


def measure(encoder: Encoder, images: list[bytes], texts: list[str],
            jpeg_draft: bool = False) -> dict:
    """Single-threaded ms per item of each preprocessing and serialisation step, as the
    server on the encoder's device does them ("resize_normalise" on CUDA: resize and crop to
    uint8; the GPU normalises)."""
    loaded = encoder.loaded
    tokenize = TextTokenizer(loaded.tokenizer, loaded.context_length)
    draft_size = loaded.image_transform.draft_size if jpeg_draft else None

    def decode(data: bytes):
        return decode_image(data, NO_LIMIT, NO_LIMIT, draft_size)

    decoded = [decode(data) for data in images]
    return {
        "decode_ms": ms_per_call(decode, images),
        "resize_normalise_ms": ms_per_call(encoder.pixels, decoded),
        "tokenise_ms": ms_per_call(tokenize, texts),
        **serialisation_ms(loaded.embedding_dim),
    }
