"""An encoder method under the test's control: hold the next batch in the model (so that what
is sent meanwhile queues up behind it) or make it fail, as a GPU out of memory would."""

from __future__ import annotations

import asyncio
import threading

from clip_grpc.model.encoder import Encoder

HOLD_S = 120  # a held batch goes on by itself after this, so that no test hangs for ever


class ScriptedBatches:
    """Patch with `scripted(monkeypatch, "embed_texts")` before the server starts: its batchers
    take the encoder's methods when the engine is built. Unscripted batches run the model."""

    def __init__(self, method: str):
        self.real = getattr(Encoder, method)
        self._hold: threading.Event | None = None
        self.holding = threading.Event()  # set once the held batch is in the model
        self._error: BaseException | None = None
        self.failed_sizes: list[int] = []  # batches failed on purpose, by their size

    def hold_next(self) -> threading.Event:
        """The next batch waits in the model until the returned event is set."""
        self._hold = threading.Event()
        return self._hold

    def fail_next(self, error: BaseException) -> None:
        """The next batch not held raises error."""
        self._error = error

    async def wait_holding(self) -> None:
        assert await asyncio.to_thread(self.holding.wait, HOLD_S), "no batch reached the model"

    def run(self, encoder: Encoder, batch: list):
        if self._hold is not None:
            hold, self._hold = self._hold, None
            self.holding.set()
            hold.wait(HOLD_S)
        elif self._error is not None:
            error, self._error = self._error, None
            self.failed_sizes.append(len(batch))
            raise error
        return self.real(encoder, batch)


def scripted(monkeypatch, method: str) -> ScriptedBatches:
    script = ScriptedBatches(method)
    monkeypatch.setattr(Encoder, method, lambda encoder, batch: script.run(encoder, batch))
    return script
