"""Model folders as users have them, served with transformers' own processor + model as the
reference: SigLIP as published (SentencePiece), fixed-resolution SigLIP 2 (Gemma tokenizer),
CLIP as transformers 5 saves it; and clear refusals for layouts that need converting."""

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from clip_grpc.engine import Input
from clip_grpc.errors import ModelLoadError
from clip_grpc.model.loading import load_model
from tests.conftest import server_config, started_engine
from tests.model_factory import (
    save_clip_transformers5,
    save_siglip2_fixed,
    save_siglip_published,
)

TEXTS = ["a photo of a cat", "A Red circle, on a BLUE background!", "x",
         "kato rimu senpho catdog redblu the an of"]


def pictures() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            for h, w in [(45, 60), (32, 32), (80, 50)]]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def features(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def reference(folder, family: str):
    """Image and text vectors from transformers' own processor and model, loaded afresh."""
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    with torch.inference_mode():
        pixels = processor(images=pictures(), return_tensors="pt").pixel_values
        images = features(model.get_image_features(pixel_values=pixels))
        if family == "siglip":
            # Padded to the 64-token context as SigLIP was trained. transformers 5.23's SigLIP
            # tokenizers also return an attention_mask; the original text tower never masks
            # its padding (it pools the last position), so only the ids go in.
            tokens = processor(text=TEXTS, padding="max_length", return_tensors="pt")
            texts = features(model.get_text_features(input_ids=tokens.input_ids))
        else:
            tokens = processor(text=TEXTS, padding=True, return_tensors="pt")
            texts = features(model.get_text_features(**tokens))
    return model, images.numpy(), texts.numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


async def served(folder):
    loaded = load_model(folder, device="cpu", dtype="fp32")
    async with started_engine(loaded, server_config(folder)) as engine:
        items = [Input(f"i{i}", image=png(p)) for i, p in enumerate(pictures())]
        items += [Input(f"t{i}", text=t) for i, t in enumerate(TEXTS)]
        vectors = await engine.embed(items, raw=True)
        ranked = await engine.rank(items[0], items[3:], truncate=False)
    return loaded, np.stack(vectors[:3]), np.stack(vectors[3:]), ranked


async def assert_parity(folder, family: str):
    model, want_images, want_texts = reference(folder, family)
    loaded, images, texts, ranked = await served(folder)
    assert loaded.family == family
    np.testing.assert_allclose(cosines(images, want_images), 1.0, atol=1e-6)
    np.testing.assert_allclose(cosines(texts, want_texts), 1.0, atol=1e-6)
    np.testing.assert_allclose(images, want_images, atol=1e-5)
    np.testing.assert_allclose(texts, want_texts, atol=1e-5)
    scale = model.logit_scale.exp().item()
    cos = cosines(want_texts, np.repeat(want_images[:1], len(TEXTS), axis=0))
    for candidate in ranked:
        assert candidate.cosine == pytest.approx(cos[candidate.index], abs=1e-5)
        logit = scale * cos[candidate.index]
        if family == "siglip":
            expected = 1 / (1 + np.exp(-(logit + model.logit_bias.item())))
        else:
            expected = np.exp(logit) / np.exp(scale * cos).sum()
        assert candidate.probability == pytest.approx(expected, abs=1e-5)
    return loaded


async def test_siglip_as_published_with_sentencepiece(tmp_path):
    folder = save_siglip_published(tmp_path / "siglip-base-patch16-224")
    assert not (folder / "vocab.json").exists() and (folder / "spiece.model").is_file()
    loaded = await assert_parity(folder, "siglip")
    assert type(loaded.tokenizer).__name__ == "SiglipTokenizer"
    assert loaded.context_length == 64 and loaded.pad_token_id == 1  # "</s>", as published


@pytest.mark.parametrize("padding_side", ["right", "left"])
async def test_siglip2_fixed_resolution_with_a_gemma_tokenizer(tmp_path, padding_side):
    folder = save_siglip2_fixed(tmp_path / "siglip2-base-patch16-224", padding_side=padding_side)
    loaded = await assert_parity(folder, "siglip")
    assert type(loaded.tokenizer).__name__ == "GemmaTokenizer"
    assert loaded.pad_token_id == 0 and loaded.padding_side == padding_side
    assert loaded.tokenizer("a cat").input_ids[-1] == 1  # <eos> appended, no <bos>


async def test_clip_as_transformers_5_saves_it(tiny_clip_dir, tmp_path):
    folder = save_clip_transformers5(tmp_path / "fine-tuned-clip", tiny_clip_dir)
    names = {p.name for p in folder.iterdir()}
    assert {"processor_config.json", "tokenizer.json"} <= names
    assert not names & {"preprocessor_config.json", "vocab.json"}
    await assert_parity(folder, "clip")


def test_a_processor_config_without_an_image_processor_is_named(tiny_clip_dir, tmp_path):
    folder = save_clip_transformers5(tmp_path / "clip", tiny_clip_dir)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "X"}))
    with pytest.raises(ModelLoadError, match="processor_config.json with an image_processor"):
        load_model(folder, device="cpu")


def test_an_open_clip_folder_points_to_convert(tmp_path):
    folder = tmp_path / "CLIP-ViT-B-32-laion2B"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text("{}")
    (folder / "open_clip_pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError) as caught:
        load_model(folder, device="cpu")
    assert "open_clip model folder" in str(caught.value)
    assert f"clip-grpc convert {folder} DEST" in str(caught.value)


def test_a_checkpoint_file_points_to_convert(tmp_path):
    checkpoint = tmp_path / "ViT-B-32.pt"
    checkpoint.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"single checkpoint file.*clip-grpc convert"):
        load_model(checkpoint, device="cpu")


def test_weights_without_a_config_are_named(tmp_path):
    folder = tmp_path / "bare"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError) as caught:
        load_model(folder, device="cpu")
    assert "pytorch_model.bin" in str(caught.value) and "no config.json" in str(caught.value)


def test_another_architecture_names_its_weights(tiny_clip_dir, tmp_path):
    folder = tmp_path / "bert"
    shutil.copytree(tiny_clip_dir, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ModelLoadError) as caught:
        load_model(folder, device="cpu")
    message = str(caught.value)
    assert "'bert' is not supported" in message and "pytorch_model.bin" in message
    assert "clip-grpc convert" in message


def test_siglip2_naflex_is_refused_with_the_reason(tiny_siglip_dir, tmp_path):
    folder = tmp_path / "siglip2-base-patch16-naflex"
    shutil.copytree(tiny_siglip_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "siglip2"}))
    with pytest.raises(ModelLoadError, match="NaFlex"):
        load_model(folder, device="cpu")


def test_the_server_exits_2_on_an_open_clip_folder_and_names_the_converter(tmp_path):
    folder = tmp_path / "CLIP-ViT-B-32-DataComp"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text("{}")
    (folder / "open_clip_model.safetensors").write_bytes(b"")
    done = subprocess.run([sys.executable, "-m", "clip_grpc", "--model", str(folder),
                           "--port", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    errors = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(f"clip-grpc convert {folder} DEST" in e["msg"] for e in errors), done.stderr
