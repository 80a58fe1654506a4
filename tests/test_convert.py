"""`clip-grpc convert`: OpenAI .pt and open_clip checkpoints -> HuggingFace CLIP folders that the
server serves with the same vectors as the checkpoint's own forward (openai_layout.py)."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from clip_grpc.__main__ import main
from clip_grpc.engine import Input
from clip_grpc.model import convert as converter
from clip_grpc.model import openai_layout
from clip_grpc.model.convert import ConversionError, convert
from clip_grpc.model.images import OPENAI_CLIP_MEAN
from clip_grpc.model.loading import load_model
from tests.checkpoint_factory import (
    openai_state_dict,
    save_open_clip,
    save_openai_state_dict,
    save_openai_torchscript,
)
from tests.conftest import server_config, started_engine

TEXTS = ["a photo of a dog", "A diagram of two blue squares", "x"]


def pictures() -> list[bytes]:
    rng = np.random.default_rng(5)
    encoded = []
    for h, w in [(48, 64), (32, 32), (70, 40)]:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    return encoded


async def served_vectors(folder):
    loaded = load_model(folder, device="cpu", dtype="fp32")
    async with started_engine(loaded, server_config(folder)) as engine:
        items = [Input(f"i{i}", image=b) for i, b in enumerate(pictures())]
        items += [Input(f"t{i}", text=t) for i, t in enumerate(TEXTS)]
        vectors = np.stack(await engine.embed(items, raw=True))
    return loaded, vectors[:3], vectors[3:]


def reference_vectors(state, arch, loaded):
    """The original layout's forward on the same pixels and token ids (zero-padded to the
    context, as OpenAI's tokenize() pads)."""
    from clip_grpc.model.images import decode_image

    pixels = torch.from_numpy(np.stack([
        loaded.image_transform(decode_image(b, 10**8, 10**8)) for b in pictures()]))
    ids = torch.zeros(len(TEXTS), arch.context_length, dtype=torch.long)
    for row, text in enumerate(TEXTS):
        tokens = loaded.tokenizer(text).input_ids
        ids[row, : len(tokens)] = torch.tensor(tokens)
    with torch.inference_mode():
        return (openai_layout.encode_image(state, arch, pixels).numpy(),
                openai_layout.encode_text(state, arch, ids).numpy())


def assert_close(got, want):
    relative = np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)
    assert relative.max() < 1e-5, relative


async def assert_serves_like_the_checkpoint(state, arch, folder):
    loaded, images, texts = await served_vectors(folder)
    want_images, want_texts = reference_vectors(state, arch, loaded)
    assert_close(images, want_images)
    assert_close(texts, want_texts)
    return loaded


def test_the_reference_attention_is_torchs_multihead_attention():
    """The reference forward's attention against nn.MultiheadAttention, which OpenAI's and
    open_clip's blocks use, with the causal mask of the text tower."""
    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x = torch.randn(2, 7, 32)
    mask = torch.full((7, 7), float("-inf")).triu(1)
    state = {f"a.{k}": v for k, v in attention.state_dict().items()}
    with torch.inference_mode():
        want = attention(x, x, x, need_weights=False, attn_mask=mask)[0]
        got = openai_layout._attention(state, "a.", x, 4, mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["torchscript", "state_dict"])
async def test_an_openai_checkpoint(tmp_path, layout, capsys):
    state = openai_state_dict(vision_width=128, text_width=128, text_mlp=300)
    if layout == "torchscript":
        source = save_openai_torchscript(tmp_path / "ViT-B-32.pt", state)
        state = {k: v.half().float() for k, v in state.items()}  # OpenAI ships fp16
    else:
        source = save_openai_state_dict(tmp_path / "ViT-B-32.pt", state)
    destination = tmp_path / "converted"
    assert main(["convert", str(source), str(destination)]) == 0
    assert f"clip-grpc --model {destination}" in capsys.readouterr().out
    config = json.loads((destination / "config.json").read_text())
    assert config["vision_config"]["hidden_act"] == "quick_gelu"
    assert config["text_config"]["intermediate_size"] == 300
    assert config["vision_config"]["num_attention_heads"] == 2  # OpenAI's width / 64
    preprocessor = json.loads((destination / "preprocessor_config.json").read_text())
    assert preprocessor["image_mean"] == list(OPENAI_CLIP_MEAN)
    assert preprocessor["size"] == {"shortest_edge": 32}
    arch = openai_layout.read_architecture(state, "quick_gelu")
    loaded = await assert_serves_like_the_checkpoint(state, arch, destination)
    assert loaded.family == "clip" and loaded.embedding_dim == 16
    assert loaded.tokenizer("a photo of a cat").input_ids == [
        49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.parametrize("safetensors", [False, True])
async def test_an_open_clip_folder(tmp_path, safetensors):
    state = openai_state_dict(seed=1)
    source = save_open_clip(tmp_path / "CLIP-ViT-B-32-laion2B", state, quick_gelu=None,
                            safetensors=safetensors)
    destination = tmp_path / "converted"
    convert(source, destination)
    config = json.loads((destination / "config.json").read_text())
    assert config["text_config"]["hidden_act"] == "gelu"  # open_clip's default
    assert config["text_config"]["num_attention_heads"] == 4  # text_cfg.heads
    assert config["vision_config"]["num_attention_heads"] == 4  # width 64 / head_width 16
    preprocessor = json.loads((destination / "preprocessor_config.json").read_text())
    assert preprocessor["image_mean"] == [0.5, 0.4, 0.3]
    assert preprocessor["image_std"] == [0.2, 0.25, 0.3]
    arch = openai_layout.read_architecture(state, "gelu", text_heads=4, vision_head_width=16)
    await assert_serves_like_the_checkpoint(state, arch, destination)


async def test_an_open_clip_quick_gelu_checkpoint_with_squash_resizing(tmp_path):
    state = openai_state_dict(seed=2)
    folder = save_open_clip(tmp_path / "DFN-ViT", state, quick_gelu=True, safetensors=True,
                            preprocess={"mean": [0.5] * 3, "std": [0.5] * 3,
                                        "interpolation": "bilinear", "resize_mode": "squash"})
    destination = tmp_path / "converted"
    convert(folder / "open_clip_model.safetensors", destination)  # the file, config beside it
    config = json.loads((destination / "config.json").read_text())
    assert config["vision_config"]["hidden_act"] == "quick_gelu"
    preprocessor = json.loads((destination / "preprocessor_config.json").read_text())
    assert preprocessor["size"] == {"height": 32, "width": 32}
    assert not preprocessor["do_center_crop"] and preprocessor["resample"] == 2
    arch = openai_layout.read_architecture(state, "quick_gelu", text_heads=4,
                                           vision_head_width=16)
    await assert_serves_like_the_checkpoint(state, arch, destination)


def test_a_mapping_that_does_not_match_is_not_written(tmp_path, monkeypatch):
    source = save_openai_state_dict(tmp_path / "model.pt", openai_state_dict())
    swapped = {**converter._BLOCK_PARTS, "ln_1": "layer_norm2", "ln_2": "layer_norm1"}
    monkeypatch.setattr(converter, "_BLOCK_PARTS", swapped)
    with pytest.raises(ConversionError, match="embeds differently.*nothing was written"):
        convert(source, tmp_path / "converted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no partial folder left


def test_a_resnet_checkpoint_is_refused(tmp_path, capsys):
    state = {k: v for k, v in openai_state_dict().items() if not k.startswith("visual.")}
    state["visual.layer1.0.conv1.weight"] = torch.zeros(4, 4, 1, 1)
    source = save_openai_state_dict(tmp_path / "RN50.pt", state)
    assert main(["convert", str(source), str(tmp_path / "out")]) == 2
    assert "ResNet" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_tensors_clipmodel_has_no_place_for_are_named(tmp_path):
    state = openai_state_dict()
    state["visual.transformer.resblocks.0.ls_1.gamma"] = torch.ones(64)  # LayerScale
    source = save_openai_state_dict(tmp_path / "model.pt", state)
    with pytest.raises(ConversionError, match="no place for.*ls_1.gamma"):
        convert(source, tmp_path / "out")


def test_open_clip_options_outside_clipmodel_are_refused(tmp_path):
    folder = save_open_clip(tmp_path / "coca", openai_state_dict(), quick_gelu=False)
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["vision_cfg"]["attentional_pool"] = True
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="vision_cfg.attentional_pool"):
        convert(folder, tmp_path / "out")


def test_another_vocabulary_is_refused(tmp_path):
    state = openai_state_dict()
    state["token_embedding.weight"] = state["token_embedding.weight"][:1000]
    with pytest.raises(ConversionError, match="1000-token vocabulary"):
        convert(save_openai_state_dict(tmp_path / "m.pt", state), tmp_path / "out")


def test_an_existing_destination_is_left_alone(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    source = save_openai_state_dict(tmp_path / "m.pt", openai_state_dict())
    with pytest.raises(ConversionError, match="not empty"):
        convert(source, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
