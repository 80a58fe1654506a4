"""Random-weight CLIP and SigLIP model folders for tests: real tokenizer, tiny or real sizes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

REPO = Path(__file__).resolve().parent.parent
TOKENIZER_SOURCES = (REPO.parent / "shared" / "clip-tokenizer", REPO / "clip_grpc" / "demo_model")
VOCAB_SIZE = 49408
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def copy_tokenizer(folder: Path, context_length: int) -> None:
    source = next(s for s in TOKENIZER_SOURCES if (s / "vocab.json").is_file())
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(source / name, folder / name)
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": context_length})
    )


def _tower(width: int, layers: int, heads: int, **extra) -> dict:
    return dict(hidden_size=width, intermediate_size=width * 4, num_hidden_layers=layers,
                num_attention_heads=heads, **extra)


def save_clip(folder: Path, *, text_width=32, vision_width=32, layers=2, heads=2,
              image_size=32, patch_size=8, projection_dim=16, seed=0) -> Path:
    """A random CLIPModel folder; the defaults are tiny, ViT-B/32 is in save_vit_b32."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=_tower(text_width, layers, heads, vocab_size=VOCAB_SIZE,
                           max_position_embeddings=77),
        vision_config=_tower(vision_width, layers, heads, image_size=image_size,
                             patch_size=patch_size),
        projection_dim=projection_dim,
    )
    CLIPModel(config).eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True, "size": {"shortest_edge": image_size}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "do_convert_rgb": True,
    }))
    copy_tokenizer(folder, 77)
    return folder


def save_vit_b32(folder: Path) -> Path:
    """Random weights at ViT-B/32's real dimensions (about 150M parameters)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=_tower(512, 12, 8, vocab_size=VOCAB_SIZE, max_position_embeddings=77),
        vision_config=_tower(768, 12, 12, image_size=224, patch_size=32),
        projection_dim=512,
    )
    CLIPModel(config).eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True, "size": {"shortest_edge": 224}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "do_convert_rgb": True,
    }))
    copy_tokenizer(folder, 77)
    return folder


def save_siglip(folder: Path, *, width=32, layers=2, heads=2, image_size=32, patch_size=8,
                context_length=64, seed=0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = SiglipConfig(
        text_config=_tower(width, layers, heads, vocab_size=VOCAB_SIZE,
                           max_position_embeddings=context_length),
        vision_config=_tower(width, layers, heads, image_size=image_size, patch_size=patch_size),
    )
    SiglipModel(config).eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "SiglipImageProcessor",
        "do_resize": True, "size": {"height": image_size, "width": image_size}, "resample": 3,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True,
    }))
    copy_tokenizer(folder, context_length)
    return folder
