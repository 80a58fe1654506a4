"""The dynamic batcher, with a recording fake model."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from clip_grpc.batching import Batcher


class RecordingModel:
    """Doubles its inputs; records every batch; can be held busy until released."""

    def __init__(self):
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, payloads):
        self.release.wait(5)
        self.batches.append(list(payloads))
        return [2 * p for p in payloads]


@pytest.fixture
async def make_batcher():
    executor = ThreadPoolExecutor(1)
    started = []

    def make(model, max_batch_size=8, max_wait_s=0.0):
        batcher = Batcher("test", model, executor, max_batch_size, max_wait_s)
        batcher.start()
        started.append(batcher)
        return batcher

    yield make
    for batcher in started:
        await batcher.stop()
    executor.shutdown()


async def test_items_of_concurrent_requests_share_a_batch(make_batcher):
    model = RecordingModel()
    batcher = make_batcher(model, max_batch_size=8, max_wait_s=0.05)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(6)))
    assert results == [0, 2, 4, 6, 8, 10]
    assert model.batches == [[0, 1, 2, 3, 4, 5]]


async def test_batches_never_exceed_the_maximum(make_batcher):
    model = RecordingModel()
    batcher = make_batcher(model, max_batch_size=4, max_wait_s=0.05)
    await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert [len(b) for b in model.batches] == [4, 4, 2]


async def test_max_wait_is_honoured(make_batcher):
    model = RecordingModel()
    batcher = make_batcher(model, max_batch_size=8, max_wait_s=0.2)
    started = time.perf_counter()
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(batcher.submit(2))  # arrives within the wait: same batch
    await asyncio.gather(first, second)
    elapsed = time.perf_counter() - started
    assert model.batches == [[1, 2]]
    assert 0.18 <= elapsed < 1.0  # waited for the batch to fill, then gave up at max_wait


async def test_a_lone_item_does_not_wait_with_zero_max_wait(make_batcher):
    model = RecordingModel()
    batcher = make_batcher(model, max_wait_s=0.0)
    started = time.perf_counter()
    assert await batcher.submit(21) == 42
    assert time.perf_counter() - started < 0.1


async def test_items_gather_while_the_model_is_busy(make_batcher):
    model = RecordingModel()
    batcher = make_batcher(model, max_batch_size=16, max_wait_s=0.0)
    model.release.clear()
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0.05)  # batch [0] is running and held
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0.05)
    model.release.set()
    await asyncio.gather(first, *rest)
    assert model.batches == [[0], [1, 2, 3, 4, 5]]


async def test_cancelled_items_never_reach_the_model(make_batcher):
    model = RecordingModel()
    batcher = make_batcher(model, max_batch_size=16, max_wait_s=0.0)
    model.release.clear()
    blocker = asyncio.create_task(batcher.submit(100))
    await asyncio.sleep(0.05)
    waiting = {i: asyncio.create_task(batcher.submit(i)) for i in range(10)}
    await asyncio.sleep(0.01)
    for i in (1, 3, 5, 7):
        waiting[i].cancel()
    await asyncio.sleep(0.01)
    model.release.set()
    await blocker
    done = await asyncio.gather(*waiting.values(), return_exceptions=True)
    seen = [p for batch in model.batches for p in batch]
    assert sorted(seen) == [0, 2, 4, 6, 8, 9, 100]
    assert [r for r in done if not isinstance(r, asyncio.CancelledError)] == [0, 4, 8, 12, 16, 18]


async def test_a_failing_batch_fails_its_items_and_the_batcher_goes_on(make_batcher):
    calls = []

    def flaky(payloads):
        calls.append(payloads)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return payloads

    batcher = make_batcher(flaky)
    with pytest.raises(RuntimeError, match="boom"):
        await batcher.submit(1)
    assert await batcher.submit(2) == 2
