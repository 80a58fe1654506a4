"""The demo model's architecture and its HuggingFace folder (everything but the weights)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from transformers import CLIPConfig, CLIPImageProcessor, CLIPTokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL_DIR = REPO_ROOT / "clip_grpc" / "demo_model"
# The real CLIP tokenizer (folder, license file): the shared copy next to this checkout when there
# is one, else the copy the demo model folder ships, so that a fresh clone can retrain.
TOKENIZER_SOURCES = (
    (REPO_ROOT.parent / "shared" / "clip-tokenizer", "LICENSE"),
    (DEMO_MODEL_DIR, "TOKENIZER_LICENSE"),
)

IMAGE_SIZE = 64
EMBEDDING_DIM = 64
CONTEXT_LENGTH = 77
BOS_TOKEN_ID, EOS_TOKEN_ID = 49406, 49407


def clip_config() -> CLIPConfig:
    """A small CLIP: a 4-layer ViT (64x64 pictures, 16x16 patches) and a 2-layer text transformer.

    The text tower keeps the real CLIP vocabulary (49,408 tokens) and context (77 tokens) so the
    real tokenizer and the service's context rule apply unchanged.
    """
    return CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": CONTEXT_LENGTH,
            "bos_token_id": BOS_TOKEN_ID,
            "eos_token_id": EOS_TOKEN_ID,
            "pad_token_id": 1,
            "projection_dim": EMBEDDING_DIM,
        },
        vision_config={
            "image_size": IMAGE_SIZE,
            "patch_size": 16,
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "projection_dim": EMBEDDING_DIM,
        },
        projection_dim=EMBEDDING_DIM,
    )


def image_processor() -> CLIPImageProcessor:
    """CLIP's preprocessing (bicubic shortest-edge resize, centre crop, CLIP mean/std) at 64 px."""
    return CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )


def tokenizer_source() -> tuple[Path, Path]:
    """The folder holding the CLIP tokenizer's vocab.json and merges.txt, and its license."""
    for folder, license_name in TOKENIZER_SOURCES:
        if all((folder / n).is_file() for n in ("vocab.json", "merges.txt", license_name)):
            return folder, folder / license_name
    searched = ", ".join(str(folder) for folder, _ in TOKENIZER_SOURCES)
    raise FileNotFoundError(f"CLIP tokenizer files (vocab.json, merges.txt) not in {searched}")


def load_source_tokenizer() -> CLIPTokenizer:
    """The real CLIP tokenizer, with CLIP's 77-token context."""
    folder, _ = tokenizer_source()
    return CLIPTokenizer.from_pretrained(folder, model_max_length=CONTEXT_LENGTH)


def _copy(source: Path, target: Path) -> None:
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)


_SPECIAL_TOKEN = {"lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def write_preprocessing_files(folder: Path) -> None:
    """Writes the preprocessor config and the tokenizer files (with their license) to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    image_processor().save_pretrained(folder)
    # save_pretrained writes tokenizer.json (what AutoTokenizer needs); the BPE files and the
    # license are copied as they are, and the two small configs are written plainly.
    load_source_tokenizer().save_pretrained(folder)
    source, license_file = tokenizer_source()
    for name in ("vocab.json", "merges.txt"):
        _copy(source / name, folder / name)
    _copy(license_file, folder / "TOKENIZER_LICENSE")
    tokenizer_config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CONTEXT_LENGTH,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
    }
    special_tokens_map = {
        "bos_token": {"content": "<|startoftext|>", **_SPECIAL_TOKEN},
        "eos_token": {"content": "<|endoftext|>", **_SPECIAL_TOKEN},
        "pad_token": "<|endoftext|>",
        "unk_token": {"content": "<|endoftext|>", **_SPECIAL_TOKEN},
    }
    for name, content in (
        ("tokenizer_config.json", tokenizer_config),
        ("special_tokens_map.json", special_tokens_map),
    ):
        (folder / name).write_text(json.dumps(content, indent=2) + "\n")
