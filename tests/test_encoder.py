"""The encoder's device handling: reused (on CUDA pinned) host buffers, bucket padding, --compile.

No GPU here: the CUDA choices are checked as choices, and every path that runs on a GPU (buffer
reuse, padding to buckets, torch.compile) runs here on the CPU against the plain forward pass.
"""

import dataclasses
import logging
import time

import numpy as np
import pytest
import torch

from clip_grpc.engine import Engine, Input
from clip_grpc.errors import StartupError
from clip_grpc.model import compiled
from clip_grpc.model.encoder import Encoder, HostBuffers, _features
from clip_grpc.model.loading import load_model
from tests.conftest import image_bytes, server_config

SENTENCES = ["a dog", "a photo of a red circle on a blue background", "x",
             "Two people riding bicycles along a river at sunset, with mountains behind them",
             "a cat"]


def pixels(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((3, 32, 32)).astype(np.float32) for _ in range(count)]


def reference_images(model, batch: list[np.ndarray]) -> np.ndarray:
    """What the encoder always did: stack, forward, back to numpy."""
    with torch.inference_mode():
        out = model.get_image_features(pixel_values=torch.from_numpy(np.stack(batch)))
    return (out if isinstance(out, torch.Tensor) else out.pooler_output).numpy()


def token_ids(loaded, texts) -> list[list[int]]:
    return [loaded.tokenizer(t).input_ids for t in texts]


def test_buffers_are_reused_grown_and_pinned_only_for_cuda(tiny_clip):
    buffers = HostBuffers(pin_memory=False)
    first = buffers.get("x", (4, 3), torch.float32)
    smaller = buffers.get("x", (2, 3), torch.float32)
    assert smaller.data_ptr() == first.data_ptr() and smaller.shape == (2, 3)
    bigger = buffers.get("x", (8, 3), torch.float32)
    assert bigger.shape == (8, 3) and buffers.get("x", (4, 3), torch.float32).data_ptr() == \
        bigger.data_ptr()
    assert buffers.get("y", (4, 3), torch.int64).data_ptr() != bigger.data_ptr()
    assert Encoder(tiny_clip).host.pin_memory is False
    on_gpu = dataclasses.replace(tiny_clip, device=torch.device("cuda", 0))
    assert Encoder(on_gpu).host.pin_memory is True  # built without touching a GPU
    assert Encoder(on_gpu).takes_uint8 is True and Encoder(tiny_clip).takes_uint8 is False


def test_images_through_reused_buffers_equal_the_plain_forward_pass(tiny_clip):
    encoder = Encoder(tiny_clip)
    for count, seed in ((5, 0), (2, 1), (5, 2), (7, 3)):
        batch = pixels(count, seed)
        np.testing.assert_array_equal(encoder.embed_images(batch),
                                      reference_images(tiny_clip.model, batch))


def test_bf16_images_are_built_in_bf16_and_equal_stacking_then_converting(tiny_clip_dir):
    loaded = load_model(tiny_clip_dir, device="cpu", dtype="bf16")
    encoder = Encoder(loaded)
    for count, seed in ((5, 0), (2, 1), (7, 3)):
        batch = pixels(count, seed)
        built = encoder.image_batch(batch)
        assert built.dtype == torch.bfloat16 and built.shape == (count, 3, 32, 32)
        assert torch.equal(built, torch.from_numpy(np.stack(batch)).to(torch.bfloat16))
        with torch.inference_mode():
            expected = loaded.model.get_image_features(
                pixel_values=torch.from_numpy(np.stack(batch)).to(torch.bfloat16))
        expected = expected if isinstance(expected, torch.Tensor) else expected.pooler_output
        np.testing.assert_array_equal(encoder.embed_images(batch), expected.float().numpy())


INT_VIEW = {torch.float32: torch.int32, torch.bfloat16: torch.int16}


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_uint8_images_normalised_by_the_encoder_have_the_bits_of_those_normalised_before(
        tiny_clip_dir, dtype):
    # What a GPU server does (uint8 over PCIe, normalised on the device), run on the CPU.
    loaded = load_model(tiny_clip_dir, device="cpu", dtype=dtype)
    normalises_first, takes_uint8 = Encoder(loaded), Encoder(loaded, takes_uint8=True)
    rng = np.random.default_rng(7)
    for count in (5, 2, 7):
        raw = [rng.integers(0, 256, (3, 32, 32), dtype=np.uint8) for _ in range(count)]
        normalised = [loaded.image_transform.normalise(p) for p in raw]
        built = takes_uint8.image_batch(raw)
        expected = normalises_first.image_batch(normalised)
        assert built.dtype == loaded.dtype and built.shape == expected.shape
        assert torch.equal(built.view(INT_VIEW[built.dtype]), expected.view(INT_VIEW[built.dtype]))
        np.testing.assert_array_equal(takes_uint8.embed_images(raw),
                                      normalises_first.embed_images(normalised))


async def test_an_engine_sending_uint8_pixels_gives_the_same_embeddings(tiny_clip_dir, tiny_clip):
    items = [Input("png", image=image_bytes()), Input("t", text="a dog"),
             Input("jpeg", image=image_bytes((10, 200, 90), (64, 48), "JPEG")),
             Input("small", image=image_bytes(size=(20, 9)))]  # padded to the crop
    results = []
    for takes_uint8 in (False, True):
        engine = Engine(tiny_clip, server_config(tiny_clip_dir))
        engine.encoder.takes_uint8 = takes_uint8  # as on CUDA
        await engine.start()
        try:
            results.append(np.stack(await engine.embed(items, raw=True)))
        finally:
            await engine.close()
    np.testing.assert_array_equal(results[1], results[0])


@pytest.mark.parametrize("pad_left", [False, True])
def test_text_batches_hold_each_text_where_its_padding_side_says(tiny_clip, pad_left):
    encoder = Encoder(tiny_clip)
    encoder.pad_left = pad_left
    encoder.buckets = {"image": (8,), "text": (8,)}  # 3 padding rows, copies of the first
    pad = tiny_clip.pad_token_id
    ids = [[5, 6, 7], [8], [9, 10, 11, 12, 13]]
    for width in (5, 16):  # as long as the longest text, or a wider bucket
        encoder.widths = (width,)
        batch = encoder.text_batch(ids)
        expected_ids = np.full((8, width), pad)
        for row, tokens in enumerate([*ids, ids[0], ids[0], ids[0], ids[0], ids[0]]):
            where = slice(width - len(tokens), width) if pad_left else slice(0, len(tokens))
            expected_ids[row, where] = tokens
        assert list(batch) == ["input_ids"]  # no attention mask: see Encoder.text_batch
        np.testing.assert_array_equal(batch["input_ids"].numpy(), expected_ids)


def test_unmasked_text_batches_give_the_vectors_of_the_masked_forward_pass(tiny_clip):
    ids = token_ids(tiny_clip, [*SENTENCES, "a", "a much longer sentence to pad the others " * 2])
    longest = max(map(len, ids))
    padded = torch.full((len(ids), longest), tiny_clip.pad_token_id)
    mask = torch.zeros((len(ids), longest), dtype=torch.int64)
    for row, tokens in enumerate(ids):
        padded[row, :len(tokens)], mask[row, :len(tokens)] = torch.tensor(tokens), 1
    with torch.inference_mode():
        masked = tiny_clip.model.get_text_features(input_ids=padded, attention_mask=mask)
    np.testing.assert_allclose(Encoder(tiny_clip).embed_texts(ids),
                               _features(masked).numpy(), atol=1e-6)


def test_texts_through_reused_buffers_equal_a_fresh_encoder(tiny_clip):
    used = Encoder(tiny_clip)
    used.embed_texts(token_ids(tiny_clip, ["a much longer sentence to fill the buffers " * 3]))
    for texts in (SENTENCES, SENTENCES[:2], SENTENCES[2:]):
        ids = token_ids(tiny_clip, texts)
        np.testing.assert_array_equal(used.embed_texts(ids), Encoder(tiny_clip).embed_texts(ids))


def test_a_batch_padded_to_its_bucket_gives_the_unpadded_results(tiny_clip):
    plain, padded = Encoder(tiny_clip), Encoder(tiny_clip)
    padded.buckets = {"image": (8,), "text": (8,)}  # what --compile does, without compiling
    batch = pixels(3)
    ids = token_ids(tiny_clip, [*SENTENCES, "three small dogs play with a red ball on the grass "
                                "of a sunny park"])
    images = padded.embed_images(batch)
    assert images.shape == (3, 16)
    np.testing.assert_allclose(images, plain.embed_images(batch), atol=1e-5)
    longest = max(map(len, ids))
    assert 16 < longest <= 32 and padded.widths == (16, 32, 64, 77)
    texts = padded.embed_texts(ids)  # 6 rows padded to 8, each to the 32-token width bucket
    assert texts.shape == (6, 16) and padded.text_batch(ids)["input_ids"].shape == (8, 32)
    np.testing.assert_allclose(texts, plain.embed_texts(ids), atol=1e-5)


def test_buckets_are_powers_of_two_up_to_the_limit():
    assert compiled.buckets_up_to(1) == (1,)
    assert compiled.buckets_up_to(32) == (1, 2, 4, 8, 16, 32)
    assert compiled.buckets_up_to(100) == (1, 2, 4, 8, 16, 32, 64, 100)
    buckets = compiled.buckets_up_to(100)
    assert [compiled.bucket_for(n, buckets) for n in (1, 3, 64, 65, 100)] == [1, 4, 64, 100, 100]
    assert compiled.text_widths(77) == (16, 32, 64, 77) and compiled.text_widths(8) == (8,)


def test_compile_without_a_compiler_stops_startup_with_the_reason(monkeypatch, tiny_clip):
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(StartupError, match="--compile on CPU needs a C\\+\\+ compiler"):
        Encoder(tiny_clip, {"image": 2, "text": 2}, compile=True)
    monkeypatch.setattr(compiled.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(StartupError, match="--compile on CUDA needs triton"):
        compiled.check_compile_possible(torch.device("cuda"))
    with pytest.raises(StartupError, match="not mps"):
        compiled.check_compile_possible(torch.device("mps"))


async def test_compiled_embeddings_equal_the_eager_ones(tiny_clip_dir, tiny_clip, caplog):
    # Compiling on 2 shared cores takes most of a minute: one image bucket, two text buckets
    # (three compiles: dynamic shapes, with batch 1 specialised), four text widths.
    config = server_config(tiny_clip_dir, compile=True, max_image_batch_size=1,
                           max_text_batch_size=2)
    items = [Input("i", image=image_bytes())] + [Input(str(i), text=t)
                                                  for i, t in enumerate(SENTENCES[:3])]
    eager = Engine(tiny_clip, server_config(tiny_clip_dir))
    await eager.start()
    try:
        expected = await eager.embed(items, raw=True)
    finally:
        await eager.close()
    engine = Engine(tiny_clip, config)
    assert engine.encoder.buckets == {"image": (1,), "text": (1, 2)}
    started = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="clip_grpc.model.encoder"):
        await engine.start()  # compiles every bucket
    compile_seconds = time.perf_counter() - started
    try:
        got = await engine.embed(items, raw=True)
    finally:
        await engine.close()
    logged = {r.modality: r for r in caplog.records if r.getMessage() == "compiled"}
    assert logged["image"].batch_sizes == [1] and logged["text"].batch_sizes == [1, 2]
    assert logged["text"].text_widths == [16, 32, 64, 77]
    assert logged["text"].compile_seconds >= 0
    assert engine.encoder._text_forward is not tiny_clip.model.get_text_features
    np.testing.assert_allclose(np.stack(got), np.stack(expected), atol=1e-5)
    print(f"compiled in {compile_seconds:.1f} s")
