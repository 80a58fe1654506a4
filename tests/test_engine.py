"""The engine: padding exactness, parity with transformers, admission, tokenising rules."""

import asyncio

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from clip_grpc.engine import Engine, Input
from clip_grpc.errors import InvalidInput, Overloaded
from clip_grpc.model.loading import load_model
from tests.conftest import image_bytes, server_config
from tests.model_factory import save_vit_b32

SENTENCES = [
    "a dog",
    "a photo of a red circle on a blue background",
    "Two people riding bicycles along a river at sunset, with mountains behind them",
    "x",
]


@pytest.fixture
async def tiny_engine(tiny_clip_dir, tiny_clip):
    engine = Engine(tiny_clip, server_config(tiny_clip_dir))
    await engine.start()
    yield engine
    await engine.close()


async def test_a_text_alone_equals_the_same_text_batched_with_longer_ones(tiny_engine):
    alone = [(await tiny_engine.embed([Input("a", text=t)]))[0] for t in SENTENCES]
    together = await tiny_engine.embed([Input(str(i), text=t) for i, t in enumerate(SENTENCES)])
    assert max(tiny_engine.text_batcher.batch_sizes) > 1
    np.testing.assert_allclose(np.stack(alone), np.stack(together), atol=1e-5)


async def test_padding_to_the_longest_text_equals_padding_to_the_context(tiny_clip):
    engine = Engine(tiny_clip, server_config("unused"))
    ids = [engine.tokenize(t) for t in SENTENCES]
    dynamic = engine.encoder.embed_texts(ids)
    engine.encoder.pad_to_context = True
    full = engine.encoder.embed_texts(ids)
    np.testing.assert_allclose(dynamic, full, atol=1e-5)


async def test_vectors_are_normalised_unless_raw_is_asked(tiny_engine):
    item = Input("a", text="a photo of a cat")
    normalised = (await tiny_engine.embed([item]))[0]
    raw = (await tiny_engine.embed([item], raw=True))[0]
    assert np.linalg.norm(normalised) == pytest.approx(1.0, abs=1e-6)
    assert np.linalg.norm(raw) != pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(raw / np.linalg.norm(raw), normalised, atol=1e-6)


async def test_text_rules(tiny_engine):
    long_text = "word " * 100
    empty, too_long, cut = await tiny_engine.embed(
        [Input("e", text="  "), Input("l", text=long_text), Input("ok", text="fine")]
    )
    assert isinstance(empty, InvalidInput) and "empty" in empty.message
    assert isinstance(too_long, InvalidInput) and "at most 77" in too_long.message
    truncated = (await tiny_engine.embed([Input("l", text=long_text)], truncate=True))[0]
    assert truncated.shape == (16,)
    assert len(tiny_engine.tokenize(long_text, truncate=True)) == 77


async def test_admission_fails_fast_when_full(tiny_clip_dir, tiny_clip):
    engine = Engine(tiny_clip, server_config(tiny_clip_dir, max_queue_size=4))
    await engine.start()
    try:
        with engine.admit(3), pytest.raises(Overloaded, match="limit 4"):
            await engine.embed([Input("a", text="a"), Input("b", text="b")])
        assert len(await engine.embed([Input(str(i), text="a") for i in range(4)])) == 4
    finally:
        await engine.close()


@pytest.fixture(scope="module")
def vit_b32(tmp_path_factory):
    folder = save_vit_b32(tmp_path_factory.mktemp("vit-b32"))
    return folder, load_model(folder, device="cpu", dtype="fp32")


async def test_parity_with_transformers_at_vit_b32_dimensions(vit_b32):
    folder, loaded = vit_b32
    rng = np.random.default_rng(1)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in [(480, 640), (224, 224), (300, 200)]
    ]
    image_bytes = []
    for image in images:
        import io

        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        image_bytes.append(buffer.getvalue())

    model, tokenizer = loaded.model, loaded.tokenizer
    processor = CLIPImageProcessor.from_pretrained(folder)
    with torch.inference_mode():
        pixels = processor(images=images, return_tensors="pt").pixel_values
        expected_images = model.get_image_features(pixel_values=pixels).pooler_output
        tokens = tokenizer(SENTENCES, padding=True, return_tensors="pt")
        expected_texts = model.get_text_features(**tokens).pooler_output

    engine = Engine(loaded, server_config(folder))
    await engine.start()
    try:
        items = [Input(f"i{i}", image=b) for i, b in enumerate(image_bytes)]
        items += [Input(f"t{i}", text=t) for i, t in enumerate(SENTENCES)]
        got = await engine.embed(items, raw=True)
        # One sentence at a time too: batching must not change a vector.
        alone = await asyncio.gather(*(engine.embed([Input("a", text=t)], raw=True)
                                       for t in SENTENCES))
    finally:
        await engine.close()
    np.testing.assert_allclose(np.stack(got[:3]), expected_images.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.stack(got[3:]), expected_texts.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        np.stack([a[0] for a in alone]), expected_texts.numpy(), atol=1e-5
    )


async def test_a_message_of_mixed_items_keeps_its_order_and_its_bad_items_fail_alone(
        tiny_engine):

    pictures = [image_bytes(size=(40 + i, 30)) for i in range(11)]  # 3 hand-offs of images
    items = [Input(f"i{i}", image=p) for i, p in enumerate(pictures)]
    items.insert(5, Input("bad", image=b"not an image"))
    items.insert(2, Input("t", text="a photo of a cat"))
    items.insert(0, Input("empty", text=" "))
    items.append(Input("none"))
    together = await tiny_engine.embed(items)
    alone = [(await tiny_engine.embed([item]))[0] for item in items]
    for item, batched, single in zip(items, together, alone, strict=True):
        if isinstance(single, InvalidInput):
            assert isinstance(batched, InvalidInput), item.id
            assert (batched.message, batched.field) == (single.message, single.field)
        else:
            np.testing.assert_allclose(batched, single, atol=1e-5, err_msg=item.id)
    errors = {item.id: o.field for item, o in zip(items, together, strict=True)
              if isinstance(o, InvalidInput)}
    assert errors == {"empty": "text", "bad": "image", "none": "content"}


async def test_the_engine_threads_carry_their_names_in_the_os(tiny_engine):
    from pathlib import Path

    await tiny_engine.embed([Input("a", text="a dog"), Input("b", image=image_bytes())])
    names = {comm.read_text().strip() for comm in Path("/proc/self/task").glob("*/comm")}
    assert "model-0" in names and "preprocess-0" in names


async def test_plain_ascii_texts_are_tokenised_in_place_the_rest_in_a_preprocess_thread(
        tiny_engine, monkeypatch):
    """Tokenising a few plain ASCII texts holds the GIL throughout, so the event loop does it
    without a hand-off; other texts, and long work, go to a thread (where the Rust tokenizer
    runs without the GIL, and the loop goes on answering)."""
    import threading

    tokenize_many = tiny_engine.tokenize.many
    threads = []

    def recording(texts, truncate=False):
        threads.append(threading.current_thread().name)
        return tokenize_many(texts, truncate)

    monkeypatch.setattr(tiny_engine.tokenize, "many", recording)
    plain = await tiny_engine.embed([Input("a", text="A photo of a cat"), Input("b", text=" ")])
    accented = await tiny_engine.embed([Input("c", text="Café naïve"), Input("d", text="a dog")])
    many_words = [Input(str(n), text="word " * 100) for n in range(9)]  # over IN_PLACE_CHARS
    await tiny_engine.embed(many_words, truncate=True)
    assert threads[0] == threading.current_thread().name
    assert threads[1].startswith("preprocess") and threads[2].startswith("preprocess")
    assert isinstance(plain[1], InvalidInput) and plain[1].field == "text"
    alone = await tiny_engine.embed([Input("d", text="a dog")])
    np.testing.assert_allclose(accented[1], alone[0], atol=1e-5)


async def test_torch_threads_are_set_in_the_model_thread(tiny_clip_dir, tiny_clip):
    before = torch.get_num_threads()
    engine = Engine(tiny_clip, server_config(tiny_clip_dir, torch_threads=1))
    try:
        await engine.start()
        assert engine.torch_threads == 1
        assert engine._model_thread.submit(torch.get_num_threads).result() == 1
        assert len(await engine.embed([Input("a", text="a dog")])) == 1
    finally:
        await engine.close()
        torch.set_num_threads(before)  # process-wide: the other tests keep theirs
