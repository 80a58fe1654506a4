"""The Python client against the real server on the tiny CLIP."""

from __future__ import annotations

import asyncio
import io

import grpc
import numpy as np
import pytest
from PIL import Image as PILImage

from clip_grpc.client import Client, ItemFailedError, Text
from clip_grpc.v1 import clip_pb2, clip_pb2_grpc
from tests.conftest import image_bytes

N_ITEMS = 2000


@pytest.fixture(scope="module")
def mixed_items(tmp_path_factory):
    """2,000 inputs in every accepted form, and the Item each one should become."""
    folder = tmp_path_factory.mktemp("client-images")
    inputs, items = [], []
    for i in range(N_ITEMS):
        kind = i % 6
        if kind < 3:
            text = f"a photo of thing number {i}, seen from angle {i % 7}"
            inputs.append(text)
            items.append(clip_pb2.Item(text=text))
            continue
        png = image_bytes(
            color=(i % 256, i * 7 % 256, i * 13 % 256), size=(20 + i % 17, 16 + i % 11)
        )
        items.append(clip_pb2.Item(image=png))
        if kind == 3:
            inputs.append(png)
        elif kind == 4:
            path = folder / f"image-{i}.png"
            path.write_bytes(png)
            inputs.append(path if i % 2 else str(path))
        else:
            inputs.append(PILImage.open(io.BytesIO(png)))
    return inputs, items


@pytest.fixture(scope="module")
async def one_by_one(clip_server, mixed_items):
    """Each item embedded alone with a plain Embed call: the reference."""
    _, items = mixed_items
    async with grpc.aio.insecure_channel(clip_server.target) as channel:
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        limit = asyncio.Semaphore(128)

        async def embed(item):
            async with limit:
                response = await stub.Embed(clip_pb2.EmbedRequest(items=[item]))
            return np.frombuffer(response.results[0].embedding.packed, "<f4")

        return np.stack(await asyncio.gather(*(embed(item) for item in items)))


async def test_encode_matches_one_by_one_embed_in_order(
    clip_server, mixed_items, one_by_one, capsys
):
    inputs, _ = mixed_items
    async with Client(clip_server.target, batch_size=7, max_in_flight=40) as client:
        embeddings = await client.aencode(inputs)
    assert embeddings.shape == (N_ITEMS, one_by_one.shape[1]) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, one_by_one, atol=1e-5)
    assert "item/s" not in capsys.readouterr().err  # no progress bar unless asked


async def test_blocking_encode_with_progress_bar(clip_server, mixed_items, one_by_one, capsys):
    inputs = mixed_items[0][:600]  # a list: the bar knows the total
    with Client(clip_server.target, show_progress=True) as client:
        embeddings = await asyncio.to_thread(client.encode, inputs)
    np.testing.assert_allclose(embeddings, one_by_one[:600], atol=1e-5)
    assert "600/600" in capsys.readouterr().err


async def test_a_corrupt_image_in_the_middle(clip_server, mixed_items, one_by_one):
    inputs = list(mixed_items[0][:300])
    inputs[150] = b"\x89PNG\r\n\x1a\n but not really"
    async with Client(clip_server.target, batch_size=16) as client:
        with pytest.raises(ItemFailedError) as raised:
            await client.aencode(inputs)
        failure = raised.value.failure
        assert (failure.index, failure.id, failure.code) == (
            150, "150", grpc.StatusCode.INVALID_ARGUMENT,
        )  # fmt: skip
        assert "item 150 (id '150') (image): INVALID_ARGUMENT" in str(raised.value)

        result = await client.aencode(inputs, errors="return")
    assert [f.index for f in result.errors] == [150]
    assert np.isnan(result.embeddings[150]).all()
    assert result.ok.sum() == 299 and not result.ok[150]
    np.testing.assert_allclose(result.embeddings[result.ok], one_by_one[:300][result.ok], atol=1e-5)


async def test_a_lazy_generator_is_pulled_only_as_answers_come_back(clip_server):
    pulled = 0

    def texts():
        nonlocal pulled
        for i in range(1000):
            pulled += 1
            yield f"sentence {i}"

    most_ahead = 0
    async with Client(clip_server.target, batch_size=10, max_in_flight=50) as client:
        indices = []
        async for outcome in client.astream(texts()):
            indices.append(outcome.index)
            most_ahead = max(most_ahead, pulled - len(indices))
    assert indices == list(range(1000))
    # 50 in flight, one batch queued, one waiting to be queued, the rest of the current answer.
    assert most_ahead <= 50 + 3 * 10


async def test_text_and_image_helpers_remove_ambiguity(clip_server, tmp_path):
    path = tmp_path / "looks-like-a-file.png"
    path.write_bytes(image_bytes())
    async with Client(clip_server.target) as client:
        as_text = await client.aencode_texts([str(path)])
        as_image = await client.aencode_images([str(path)])
        guessed = await client.aencode([str(path), Text(str(path))])
    np.testing.assert_allclose(guessed, np.concatenate([as_image, as_text]), atol=1e-6)
    assert not np.allclose(as_text, as_image)


async def test_empty_input_and_raw_features(clip_server):
    async with Client(clip_server.target) as client:
        info = await client.ainfo()
        empty = await client.aencode([])
        normalised, raw = await client.aencode(["a cat"]), await client.aencode(["a cat"], raw=True)
    assert empty.shape == (0, info.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(normalised), 1.0, atol=1e-5)
    np.testing.assert_allclose(raw / np.linalg.norm(raw), normalised, atol=1e-5)


async def test_rank_orders_candidates_best_first(clip_server):
    candidates = ["a red square", image_bytes((250, 0, 0)), image_bytes((0, 0, 250)), "grass"]
    async with Client(clip_server.target) as client:
        matches = await client.arank(image_bytes((240, 10, 10)), candidates)
        query, rows = (
            await client.aencode([image_bytes((240, 10, 10))]),
            await client.aencode(candidates),
        )
    cosines = rows @ query[0]
    assert [m.index for m in matches] == list(np.argsort(-cosines, kind="stable"))
    np.testing.assert_allclose([m.cosine for m in matches], np.sort(cosines)[::-1], atol=1e-5)
    assert all(m.candidate is candidates[m.index] for m in matches)
    assert sum(m.probability for m in matches) == pytest.approx(1.0, abs=1e-5)


async def test_server_errors_surface_as_grpc_errors(clip_server):
    async with Client(clip_server.target, retries=0) as client:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.arank("a query", [])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_info_and_profile(clip_server):
    report = io.StringIO()
    with Client(clip_server.target) as client:
        info = await asyncio.to_thread(client.info)
        timings = await asyncio.to_thread(client.profile, 3, file=report)
    assert info.model_family == "clip" and info.embedding_dim > 0
    stages = ("preprocess", "queue", "forward", "serialise")
    assert set(timings) == {
        "info_roundtrip_ms", "text_roundtrip_ms", "image_roundtrip_ms",
        "text_server_ms", "image_server_ms",
        *(f"{kind}_{stage}_ms" for kind in ("text", "image") for stage in stages),
    }  # fmt: skip
    assert all(value > 0 for value in timings.values())  # NaN (no trailer) fails too
    for kind in ("text", "image"):
        assert timings[f"{kind}_roundtrip_ms"] >= timings[f"{kind}_server_ms"]
        # medians of separate calls need not add up exactly; each stage fits in the total
        assert all(timings[f"{kind}_{stage}_ms"] <= timings[f"{kind}_server_ms"]
                   for stage in stages)
    assert "decode / tokenise" in report.getvalue() and "forward pass" in report.getvalue()
    assert f"dim {info.embedding_dim}" in report.getvalue()
