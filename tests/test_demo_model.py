"""The shipped demo model: a real CLIP folder, and zero-shot accuracy through the service."""

from __future__ import annotations

import asyncio
import io
import json

import grpc
import pytest
from transformers import AutoTokenizer, CLIPTokenizer

from clip_grpc.config import DEMO_MODEL_DIR
from clip_grpc.model.loading import load_model
from clip_grpc.server import running_server
from clip_grpc.v1 import clip_pb2 as pb
from clip_grpc.v1 import clip_pb2_grpc
from demo import world
from demo.examples import EXAMPLES, class_caption
from demo.model_folder import REPO_ROOT
from tests.conftest import server_config

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]
HELD_OUT_PICTURES = 150
CONCURRENT_RANKS = 8  # 8 x 49 items stays well inside the server's queue limit


@pytest.mark.parametrize("tokenizer_class", [CLIPTokenizer, AutoTokenizer])
def test_folder_holds_the_real_clip_tokenizer(tokenizer_class):
    tokenizer = tokenizer_class.from_pretrained(DEMO_MODEL_DIR, local_files_only=True)
    assert len(tokenizer) == 49408
    assert tokenizer.model_max_length == 77
    assert tokenizer("a photo of a cat").input_ids == CAT_IDS


def test_folder_is_a_clip_with_77_token_context_and_fits_in_20_mb():
    config = json.loads((DEMO_MODEL_DIR / "config.json").read_text())
    assert config["model_type"] == "clip"
    assert config["text_config"]["max_position_embeddings"] == 77
    assert config["text_config"]["vocab_size"] == 49408
    processor = json.loads((DEMO_MODEL_DIR / "preprocessor_config.json").read_text())
    assert processor["crop_size"]["height"] == config["vision_config"]["image_size"]
    assert (DEMO_MODEL_DIR / "TOKENIZER_LICENSE").read_text().startswith("MIT License")
    assert (DEMO_MODEL_DIR / "MODEL_CARD.md").is_file()
    size = sum(f.stat().st_size for f in DEMO_MODEL_DIR.iterdir() if f.is_file())
    assert size <= 20 * 1024 * 1024


@pytest.fixture(scope="module")
def demo_model():
    return load_model(DEMO_MODEL_DIR, device="cpu", dtype="fp32")


def test_weights_load_as_float32(demo_model):
    assert {p.dtype for p in demo_model.model.parameters()} == {demo_model.dtype}
    assert demo_model.dtype_name == "fp32"
    assert demo_model.context_length == 77


@pytest.fixture(scope="module")
async def stub(demo_model):
    config = server_config("")  # no model path: the server falls back to the demo model
    assert config.serves_demo_model
    async with running_server(config, loaded=demo_model) as running:
        async with grpc.aio.insecure_channel(running.target) as channel:
            yield clip_pb2_grpc.ClipServiceStub(channel)


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def best_caption(stub, image_bytes: bytes, captions: list[str]) -> str:
    request = pb.RankRequest(
        query=pb.Item(id="picture", image=image_bytes),
        candidates=[pb.Item(id=caption, text=caption) for caption in captions],
    )
    response = await stub.Rank(request)
    return response.candidates[0].id


async def test_zero_shot_colour_x_shape_accuracy_through_rank(stub):
    pictures = world.evaluation_set(HELD_OUT_PICTURES)
    classes, prompts = world.class_prompts()
    assert len(set(prompts)) == len(world.COLOURS) * len(world.SHAPES)
    slots = asyncio.Semaphore(CONCURRENT_RANKS)

    async def classify(image) -> str:
        async with slots:
            return await best_caption(stub, png_bytes(image), prompts)

    guesses = await asyncio.gather(*(classify(image) for image, _ in pictures))
    truths = [prompts[classes.index((s.colour, s.shape))] for _, s in pictures]
    accuracy = sum(g == t for g, t in zip(guesses, truths, strict=True)) / len(pictures)
    assert accuracy >= 0.85, f"zero-shot colour x shape accuracy {accuracy:.1%}"


async def test_each_example_picture_ranks_its_caption_first(stub):
    _, prompts = world.class_prompts()
    for name, scene in EXAMPLES:
        image_bytes = (REPO_ROOT / "examples" / name).read_bytes()
        assert await best_caption(stub, image_bytes, prompts) == class_caption(scene), name
