"""Throughput and latency summaries."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Summary:
    items: int
    seconds: float
    items_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int

    def as_dict(self) -> dict:
        return {key: round(value, 3) if isinstance(value, float) else value
                for key, value in asdict(self).items()}


def summarize(items: int, seconds: float, latencies_s: list[float]) -> Summary:
    """latencies_s: one per request (a batch, a stream message or an HTTP request)."""
    if not latencies_s:
        raise ValueError("no request completed inside the measured window")
    p50, p95, p99 = np.percentile(np.asarray(latencies_s) * 1000, [50, 95, 99])
    return Summary(items, seconds, items / seconds, float(p50), float(p95), float(p99),
                   len(latencies_s))
