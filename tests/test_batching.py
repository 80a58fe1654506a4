"""The dynamic batcher, with a recording fake model."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from clip_grpc.batching import Batcher
from tests.waiting import until


class RecordingModel:
    """Doubles its inputs; records every batch; can be held busy until released. `running`
    is set once a batch has reached the model."""

    def __init__(self):
        self.batches: list[list[int]] = []
        self.running = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, payloads):
        self.running.set()
        self.release.wait(60)
        self.batches.append(list(payloads))
        return [2 * p for p in payloads]

    async def wait_running(self) -> None:
        assert await asyncio.to_thread(self.running.wait, 60), "no batch reached the model"

    async def held(self, submitted) -> asyncio.Task:
        """Hold the model on the batch of `submitted` (a batcher call): once it is running,
        the task, until release is set."""
        self.release.clear()
        task = asyncio.create_task(submitted)
        await self.wait_running()
        return task


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


async def test_an_item_arriving_within_max_wait_joins_the_waiting_batch(make_batcher):
    model = RecordingModel()
    # A wait no machine could outlast: the batch can only leave because it filled up.
    batcher = make_batcher(model, max_batch_size=2, max_wait_s=600)
    first = asyncio.create_task(batcher.submit(1))
    await until(lambda: batcher.queued() == 0)  # the batcher holds item 1, waiting for more
    assert not first.done() and model.batches == []
    second = asyncio.create_task(batcher.submit(2))
    assert await asyncio.wait_for(asyncio.gather(first, second), 60) == [2, 4]
    assert model.batches == [[1, 2]]


async def test_a_batch_that_does_not_fill_leaves_after_max_wait(make_batcher):
    model = RecordingModel()
    batcher = make_batcher(model, max_batch_size=8, max_wait_s=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = asyncio.create_task(batcher.submit(1))
    await until(lambda: batcher.queued() == 0)
    second = asyncio.create_task(batcher.submit(2))  # arrives within the wait: same batch
    # It gives up on its own (no more items come); a lower bound only, which load cannot break.
    assert await asyncio.wait_for(asyncio.gather(first, second), 60) == [2, 4]
    assert loop.time() - started >= 0.5 - 0.01  # the loop's timers may fire a tick early
    assert model.batches == [[1, 2]]


async def test_a_lone_item_does_not_wait_with_zero_max_wait(make_batcher):
    model = RecordingModel()
    never_full = make_batcher(model, max_batch_size=8, max_wait_s=0.0)
    # Were max_wait ignored, the item would sit waiting for 7 more that never come.
    assert await asyncio.wait_for(never_full.submit(21), 60) == 42
    assert model.batches == [[21]]


async def test_items_gather_while_the_model_is_busy(make_batcher):
    model = RecordingModel()
    batcher = make_batcher(model, max_batch_size=16, max_wait_s=0.0)
    first = await model.held(batcher.submit(0))  # batch [0] is running and held
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 6)]
    await until(lambda: batcher.queued() == 5)
    model.release.set()
    await asyncio.gather(first, *rest)
    assert model.batches == [[0], [1, 2, 3, 4, 5]]


async def test_cancelled_items_never_reach_the_model(make_batcher):
    model = RecordingModel()
    batcher = make_batcher(model, max_batch_size=16, max_wait_s=0.0)
    blocker = await model.held(batcher.submit(100))
    waiting = {i: asyncio.create_task(batcher.submit(i)) for i in range(10)}
    await until(lambda: batcher.queued() == 10)
    cancelled = [waiting[i] for i in (1, 3, 5, 7)]
    for task in cancelled:
        task.cancel()
    await asyncio.gather(*cancelled, return_exceptions=True)
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


async def test_chunks_are_cut_across_batches_and_come_back_whole_and_in_order(make_batcher):
    model = RecordingModel()
    batcher = make_batcher(model, max_batch_size=4, max_wait_s=0.0)
    blocker = await model.held(batcher.submit(100))
    chunks = [list(range(0, 3)), list(range(10, 16)), [20]]
    tasks = [asyncio.create_task(batcher.submit_many_timed(c)) for c in chunks]
    await until(lambda: batcher.queued() == 10)
    model.release.set()
    await blocker
    results = [outputs for outputs, _, _ in await asyncio.gather(*tasks)]
    assert results == [[2 * p for p in chunk] for chunk in chunks]
    assert model.batches == [[100], [0, 1, 2, 10], [11, 12, 13, 14], [15, 20]]


async def test_a_chunk_of_arrays_gets_its_rows_of_the_output_array(make_batcher):
    batcher = make_batcher(lambda payloads: np.stack(payloads) * 2, max_batch_size=2)
    outputs, queue_s, forward_s = await batcher.submit_many_timed([np.full(3, i) for i in range(5)])
    np.testing.assert_array_equal(outputs, 2 * np.repeat(np.arange(5), 3).reshape(5, 3))
    assert queue_s >= 0 and forward_s >= 0


async def test_a_cancelled_chunk_is_dropped_even_when_partly_run(make_batcher):
    model = RecordingModel()
    batcher = make_batcher(model, max_batch_size=2, max_wait_s=0.0)
    gone = await model.held(batcher.submit_many_timed([1, 2, 3, 4, 5]))  # [1, 2] in the model
    kept = asyncio.create_task(batcher.submit_many_timed([7]))
    await until(lambda: batcher.queued() == 4)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    model.release.set()
    assert (await kept)[0] == [14]
    assert model.batches == [[1, 2], [7]]


async def test_a_failing_batch_fails_only_the_chunks_in_it(make_batcher):
    class FailsOn13(RecordingModel):
        def __call__(self, payloads):
            outputs = super().__call__(payloads)
            if 13 in payloads:
                raise RuntimeError("boom")
            return outputs

    model = FailsOn13()
    batcher = make_batcher(model, max_batch_size=4, max_wait_s=0.0)
    blocker = await model.held(batcher.submit(100))
    chunks = ([1, 2, 12], [13, 3], [4], [5])
    tasks = [asyncio.create_task(batcher.submit_many_timed(c)) for c in chunks]
    await until(lambda: batcher.queued() == 7)
    model.release.set()
    await blocker
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert [isinstance(o, RuntimeError) for o in outcomes] == [True, True, False, False]
    assert [o[0] for o in outcomes[2:]] == [[8], [10]]
    assert model.batches == [[100], [1, 2, 12, 13], [4, 5]]  # the rest of [13, 3] is dropped


async def test_a_batch_waits_for_more_only_while_more_are_on_their_way(make_batcher):
    model = RecordingModel()
    # A wait no machine could outlast: only knowing that nothing else is coming lets it go.
    batcher = make_batcher(model, max_batch_size=8, max_wait_s=600)
    on_their_way = 1
    batcher.coming = lambda: on_their_way
    first = asyncio.create_task(batcher.submit(1))
    await until(lambda: batcher.queued() == 0)  # held, waiting for the one on its way
    assert not first.done()
    on_their_way = 0
    second = asyncio.create_task(batcher.submit(2))  # it arrived; nothing else is coming
    assert await asyncio.wait_for(asyncio.gather(first, second), 60) == [2, 4]
    assert await asyncio.wait_for(batcher.submit(3), 60) == 6  # alone, at once
    assert model.batches == [[1, 2], [3]]
