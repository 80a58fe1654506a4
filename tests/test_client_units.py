"""Client pieces that need no server: the item rule, batching, connection settings, and the
EmbedStream engine against a scripted stream."""

from __future__ import annotations

import asyncio
import io
import json

import grpc
import numpy as np
import pytest
from PIL import Image as PILImage

from clip_grpc.client import Client, Image, ItemFailure, RetryPolicy, StreamProtocolError, Text
from clip_grpc.client.batches import Batcher
from clip_grpc.client.connection import Connection
from clip_grpc.client.items import to_item
from clip_grpc.client.results import outcomes
from clip_grpc.client.stream import BatchFeed, EmbedStreamer
from clip_grpc.v1 import clip_pb2
from tests.conftest import image_bytes


def test_item_rule(tmp_path):
    png = image_bytes()
    path = tmp_path / "cat.png"
    path.write_bytes(png)
    assert to_item("a cat", 0) == clip_pb2.Item(id="0", text="a cat")
    assert to_item(str(path), 1) == clip_pb2.Item(id="1", image=png)
    assert to_item(path, 2) == clip_pb2.Item(id="2", image=png)
    assert to_item(png, 3) == clip_pb2.Item(id="3", image=png)
    assert to_item(Text(str(path), id="t"), 4) == clip_pb2.Item(id="t", text=str(path))
    assert to_item(str(tmp_path / "missing.png"), 5).text == str(tmp_path / "missing.png")


def test_pil_images_travel_losslessly():
    original = PILImage.effect_noise((24, 16), 80).convert("RGB")
    item = to_item(original, 0)
    decoded = PILImage.open(io.BytesIO(item.image))
    assert np.array_equal(np.asarray(decoded), np.asarray(original))
    cmyk = to_item(original.convert("CMYK"), 1)  # PNG cannot hold CMYK: sent as RGB
    assert PILImage.open(io.BytesIO(cmyk.image)).mode == "RGB"


def test_unreadable_image_is_a_local_failure_and_bad_types_raise(tmp_path):
    failure = to_item(Image(tmp_path / "missing.png", id="m"), 7)
    assert isinstance(failure, ItemFailure)
    assert (failure.index, failure.id, failure.code) == (7, "m", grpc.StatusCode.NOT_FOUND)
    assert "item 7 (id 'm')" in str(failure)
    with pytest.raises(TypeError, match="item 3 of type int"):
        to_item(42, 3)


def test_batcher_respects_count_and_bytes(tmp_path):
    batcher = Batcher(clip_pb2.EmbedOptions(truncate=True), batch_size=3, max_request_bytes=1000)
    inputs = iter(["a", "b", "c", "d", b"x" * 900, "e", b"y" * 2000, Image(tmp_path / "no.png")])
    batches = []
    while done := batcher.fill(inputs):
        batches.extend(done)
    assert [(b.start, b.size) for b in batches] == [(0, 3), (3, 3), (6, 1), (7, 1)]
    assert all(b.request.options.truncate for b in batches)
    assert batches[1].request_bytes <= 1000  # "d", 900 bytes, "e"
    assert batches[3].sends_nothing and batches[3].failures[0].index == 7


def test_connection_settings(tmp_path):
    plain = Connection.build("grpc://localhost:1", token="s3cret", metadata={"X-Team": "a"})
    assert plain.targets.single == "localhost:1" and not plain.tls
    assert plain.metadata == (("x-team", "a"), ("authorization", "Bearer s3cret"))
    pem = tmp_path / "roots.pem"
    pem.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    assert Connection.build("grpcs://h:443").tls
    secured = Connection.build("h:443", root_certificates=pem)
    assert secured.tls and secured.root_certificates == pem.read_bytes()
    config = json.loads(dict(Connection.build("h:1", retries=9).options)["grpc.service_config"])
    assert config["methodConfig"][0]["retryPolicy"]["maxAttempts"] == 5  # gRPC's ceiling


class ScriptedCall:
    """A fake EmbedStream call: answers each message in order and tracks items in flight.
    `refuse` lists message numbers answered with a per-item refusal instead; with `fill_to`,
    the first answer is held until that many items are in flight."""

    def __init__(self, log, refuse=(), code=grpc.StatusCode.UNAVAILABLE, short=False, fill_to=0):
        self.log, self.refuse, self.code, self.short = log, set(refuse), code, short
        self.fill_to = fill_to
        self.written: asyncio.Queue = asyncio.Queue()
        self.in_flight = 0
        self.half_closed = False
        self.wrote = asyncio.Event()  # set by every write and by the half-close

    async def write(self, request):
        self.in_flight += len(request.items)
        self.wrote.set()
        self.log["max_in_flight"] = max(self.log.get("max_in_flight", 0), self.in_flight)
        self.log.setdefault("sent", []).extend(item.id for item in request.items)
        await self.written.put(request)

    async def done_writing(self):
        self.half_closed = True
        self.wrote.set()
        await self.written.put(None)

    async def read(self):
        request = await self.written.get()
        if request is None:
            return grpc.aio.EOF
        # The first answer waits until the writer has fill_to items in flight (or has
        # half-closed): the client's bound is reached for sure, however slow the machine.
        while self.in_flight < self.fill_to and not self.half_closed:
            self.wrote.clear()
            await asyncio.wait_for(self.wrote.wait(), 60)
        self.fill_to = 0
        self.in_flight -= len(request.items)
        number = self.log["messages"] = self.log.get("messages", 0) + 1
        if number in self.refuse:
            error = clip_pb2.ItemError(code=self.code.value[0], message="busy")
            return clip_pb2.EmbedStreamResponse(
                results=[clip_pb2.EmbedResult(id=i.id, error=error) for i in request.items]
            )
        items = request.items[:-1] if self.short else request.items
        return clip_pb2.EmbedStreamResponse(results=[_fake_result(item) for item in items])

    def cancel(self):
        pass


def _fake_result(item):
    vector = np.array([float(item.id), 1.0], dtype="<f4")
    return clip_pb2.EmbedResult(
        id=item.id, embedding=clip_pb2.Embedding(dim=2, packed=vector.tobytes())
    )


FAST_RETRY = RetryPolicy(retries=3, backoff_s=0.001)


async def _collect(calls, inputs, retry=FAST_RETRY, **limits):
    calls = iter(calls)
    limits = {"batch_size": 4, "max_in_flight": 12} | limits
    feed = BatchFeed(inputs, Batcher(clip_pb2.EmbedOptions(), limits["batch_size"], 1 << 20))
    streamer = EmbedStreamer(lambda: next(calls), feed, timeout_s=5, retry=retry, **limits)
    try:
        pairs = [pair async for pair in streamer]
    finally:
        feed.close()
    return [o for batch, results in pairs for o in outcomes(batch, results)]


async def test_stream_keeps_order_and_bounds_items_in_flight():
    log = {}
    got = await _collect([ScriptedCall(log, fill_to=12)], (str(i) for i in range(103)))
    assert [o.index for o in got] == list(range(103))
    assert [o.embedding[0] for o in got] == [float(i) for i in range(103)]
    assert log["max_in_flight"] == 12  # the limit is reached and never passed
    assert log["sent"] == [str(i) for i in range(103)]  # nothing sent twice


async def test_stream_resends_refused_messages_on_a_new_stream():
    log = {}
    calls = [ScriptedCall(log, refuse={3}), ScriptedCall(log)]
    got = await _collect(calls, [str(i) for i in range(40)])
    assert [o.error for o in got] == [None] * 40
    assert [o.embedding[0] for o in got] == [float(i) for i in range(40)]
    assert log["sent"][:8] == [str(i) for i in range(8)]
    assert log["sent"].count("8") == 2  # the refused message (items 8-11) went again


async def test_refusals_become_item_errors_once_retries_run_out():
    calls = [ScriptedCall({}, refuse={1}, code=grpc.StatusCode.RESOURCE_EXHAUSTED)]
    got = await _collect(calls, ["0", "1", "2", "3", "4"], retry=RetryPolicy(retries=0))
    assert [o.error.code if o.error else None for o in got] == (
        [grpc.StatusCode.RESOURCE_EXHAUSTED] * 4 + [None]
    )


async def test_a_short_answer_is_a_protocol_error():
    with pytest.raises(StreamProtocolError, match="3 results for a message of 4 items"):
        await _collect([ScriptedCall({}, short=True)], ["0", "1", "2", "3"])


async def test_a_bad_input_raises_after_the_items_before_it():
    with pytest.raises(TypeError, match="item 9 of type object"):
        await _collect([ScriptedCall({})], ["1"] * 9 + [object()])


def test_a_single_item_instead_of_a_list_is_refused():
    with Client("127.0.0.1:1") as client, pytest.raises(TypeError, match=r"encode\(\[item\]\)"):
        client.encode("a cat")
