"""The ceiling: the model's forward pass alone, on inputs preprocessed beforehand."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from clip_grpc.model.encoder import Encoder
from clip_grpc.model.images import decode_image
from clip_grpc.model.texts import TextTokenizer

from .stats import summarize

NO_LIMIT = 1 << 40


def preprocess(encoder: Encoder, images: list[bytes], texts: list[str]):
    """Pixels in the form the encoder takes (uint8 for a GPU, as the server sends it), ids."""
    loaded = encoder.loaded
    tokenize = TextTokenizer(loaded.tokenizer, loaded.context_length)
    pixels = [encoder.pixels(decode_image(data, NO_LIMIT, NO_LIMIT)) for data in images]
    return pixels, [tokenize(text) for text in texts]


def time_batches(run: Callable[[list], object], inputs: Sequence, batch_size: int,
                 seconds: float, min_batches: int = 3) -> dict:
    """Run batches of batch_size, cycling through inputs, for about `seconds`."""
    def batch(index: int) -> list:
        start = index * batch_size
        return [inputs[(start + k) % len(inputs)] for k in range(batch_size)]

    run(batch(0))  # warm-up: first calls allocate
    latencies: list[float] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    while len(latencies) < min_batches or time.perf_counter() - started < seconds:
        begin = time.perf_counter()
        run(batch(len(latencies) + 1))
        latencies.append(time.perf_counter() - begin)
    elapsed = time.perf_counter() - started
    items = batch_size * len(latencies)
    cpu_ms_per_item = (time.process_time() - cpu_started) * 1000 / items  # all torch threads
    return {"batch_size": batch_size, "cpu_ms_per_item": round(cpu_ms_per_item, 3),
            **summarize(items, elapsed, latencies).as_dict()}


def forward_ceiling(encoder: Encoder, pixels: list, token_ids: list,
                    batch_sizes: Mapping[str, list[int]], seconds: float) -> dict:
    """Per kind: items/s and batch latency at each of its batch sizes, and the best (the
    ceiling). The encoder is the server's (its device, dtype and --compile): every batch is
    copied back to the host, so GPU times are whole."""
    results = {}
    for kind, run, inputs in (("image", encoder.embed_images, pixels),
                              ("text", encoder.embed_texts, token_ids)):
        rows = [time_batches(run, inputs, size, seconds) for size in batch_sizes[kind]]
        for row in rows:
            print(f"  model-only {kind:5} batch {row['batch_size']:3}: "
                  f"{row['items_per_s']:9.1f} items/s, {row['p50_ms']:8.2f} ms per batch",
                  flush=True)
        results[kind] = {"by_batch_size": rows,
                         "ceiling_items_per_s": max(row["items_per_s"] for row in rows)}
    return results
