"""Where one call's server time went: preprocess, queue, forward, serialise.

The access-log interceptor opens a `StageTimes` for each unary call (a context variable, so the
engine's per-hand-off tasks see the same object without it being passed down); the engine and the
servicer add to it where each stage happens, and the interceptor writes it into the call's
`server-timing` trailer (W3C Server-Timing syntax, durations in ms):

    server-timing: total;dur=4.812, preprocess;dur=0.611, queue;dur=0.203, forward;dur=3.550,
                   serialise;dur=0.041

preprocess, queue and forward are those of the call's slowest item (the one that finished last:
its image decoded and resized or its text tokenised, including any wait for a worker thread; the
wait for its batch to start; its batch's forward pass), so with serialise they add up to nearly
the total. Outside a unary call (streams, warm-up) nothing is recorded.
"""

from __future__ import annotations

import contextvars

STAGES = ("preprocess", "queue", "forward", "serialise")


class StageTimes:
    __slots__ = ("preprocess", "queue", "forward", "serialise", "_slowest")

    def __init__(self):
        self.preprocess = self.queue = self.forward = self.serialise = 0.0
        self._slowest = -1.0

    def item(self, preprocess: float, queue: float, forward: float) -> None:
        """One item's stage seconds; the call keeps those of its slowest item."""
        spent = preprocess + queue + forward
        if spent > self._slowest:
            self._slowest = spent
            self.preprocess, self.queue, self.forward = preprocess, queue, forward

    def header(self, total_seconds: float) -> str:
        """The `server-timing` value: total first, then each stage, in ms."""
        parts = [f"total;dur={total_seconds * 1000:.3f}"]
        parts += [f"{name};dur={getattr(self, name) * 1000:.3f}" for name in STAGES]
        return ", ".join(parts)


current: contextvars.ContextVar[StageTimes | None] = contextvars.ContextVar(
    "clip_grpc_stage_times", default=None
)

