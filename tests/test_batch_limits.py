"""Per-modality batch limits: chosen by device unless flags say; batchers and metrics use them."""

import pytest
import torch

from clip_grpc.config import ServerConfig, batch_limits, parse_args, torch_threads
from clip_grpc.engine import Engine, Input
from clip_grpc.metrics import ServerMetrics
from tests.conftest import image_bytes, server_config


@pytest.mark.parametrize(("flags", "device", "expected"), [
    ({}, "cpu", {"image": 32, "text": 32}),
    ({}, "cuda", {"image": 128, "text": 512}),
    ({}, "cuda:1", {"image": 128, "text": 512}),
    ({}, torch.device("cuda", 0), {"image": 128, "text": 512}),
    ({}, torch.device("cpu"), {"image": 32, "text": 32}),
    ({}, "mps", {"image": 32, "text": 32}),  # any other device: the CPU's
    ({"max_batch_size": 64}, "cuda", {"image": 64, "text": 64}),  # the common fallback
    ({"max_batch_size": 8}, "cpu", {"image": 8, "text": 8}),
    ({"max_text_batch_size": 1024}, "cuda", {"image": 128, "text": 1024}),
    ({"max_image_batch_size": 16}, "cpu", {"image": 16, "text": 32}),
    ({"max_batch_size": 64, "max_image_batch_size": 256}, "cuda", {"image": 256, "text": 64}),
    ({"max_batch_size": 4, "max_image_batch_size": 2, "max_text_batch_size": 9}, "cpu",
     {"image": 2, "text": 9}),
])
def test_the_modality_flag_wins_then_max_batch_size_then_the_device(flags, device, expected):
    assert batch_limits(ServerConfig(**flags), device) == expected


def test_the_flags_and_their_environment_variables_reach_the_limits():
    config = parse_args(["--max-text-batch-size", "300"],
                        {"CLIP_GRPC_MAX_IMAGE_BATCH_SIZE": "100"})
    assert batch_limits(config, "cuda") == {"image": 100, "text": 300}
    with pytest.raises(SystemExit):
        parse_args(["--max-image-batch-size", "-1"], {})


@pytest.mark.parametrize(("flag", "device", "expected"), [
    (0, "cuda", 1), (0, "cuda:1", 1), (0, "cpu", None), (3, "cuda", 3), (3, "cpu", 3),
])
def test_torch_threads_are_one_on_cuda_unless_given(flag, device, expected):
    """On CPU None leaves torch's own choice (OMP_NUM_THREADS, a worker's share)."""
    assert torch_threads(ServerConfig(torch_threads=flag), device) == expected


def test_the_batch_size_histogram_has_a_bucket_at_each_limit():
    metrics = ServerMetrics({"image": 128, "text": 512})
    assert metrics.batch_buckets == (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    metrics.use_batch_limits({"image": 24, "text": 24})  # a second engine with other limits
    assert metrics.batch_buckets == (1, 2, 4, 8, 16, 24)
    metrics.batch_done("text", 20, 0.01)
    [family] = [f for f in metrics.registry.collect() if f.name == "clip_grpc_batch_size"]
    counts = {s.labels["le"]: s.value for s in family.samples
              if s.name.endswith("_bucket") and s.labels["modality"] == "text"}
    assert counts["16.0"] == 0 and counts["24.0"] == 1


async def test_the_engine_forms_text_batches_larger_than_image_batches(tiny_clip_dir, tiny_clip):
    # A long max wait lets each batch fill to its limit from what the test queued at once.
    config = server_config(tiny_clip_dir, max_image_batch_size=2, max_text_batch_size=12,
                           max_wait_ms=500)
    engine = Engine(tiny_clip, config)
    assert engine.batch_limits == {"image": 2, "text": 12}
    await engine.start()
    try:
        items = ([Input(f"t{i}", text=f"sentence number {i}") for i in range(24)]
                 + [Input(f"i{i}", image=image_bytes(color=(i * 20, 0, 0))) for i in range(6)])
        results = await engine.embed(items)
    finally:
        await engine.close()
    assert len(results) == 30 and all(r.shape == (16,) for r in results)
    image_sizes = list(engine.image_batcher.batch_sizes)[1:]  # after the warm-up batch
    text_sizes = list(engine.text_batcher.batch_sizes)[1:]
    assert sum(image_sizes) == 6 and max(image_sizes) == 2
    assert sum(text_sizes) == 24 and 2 < max(text_sizes) <= 12
    assert engine.metrics.batch_buckets == (1, 2, 4, 8, 12)
