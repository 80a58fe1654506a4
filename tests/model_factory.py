"""Random-weight CLIP and SigLIP model folders for tests: real tokenizer, tiny or real sizes."""

from __future__ import annotations

import io
import json
import random
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


def write_clip_preprocessor(folder: Path, image_size: int) -> None:
    """CLIP's own image processing (bicubic shortest-edge resize, centre crop, CLIP's mean and
    std) at image_size."""
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True, "size": {"shortest_edge": image_size}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "do_convert_rgb": True,
    }))


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
    write_clip_preprocessor(folder, image_size)
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
    write_clip_preprocessor(folder, 224)
    copy_tokenizer(folder, 77)
    return folder


def save_near_free(folder: Path) -> Path:
    """A CLIP whose forward pass is nearly free (1 layer, 32 wide, 224 px input, real tokenizer):
    what is left in an end-to-end run is the serving path's own cost (bench "serving overhead")."""
    return save_clip(folder, text_width=32, vision_width=32, layers=1, heads=2, image_size=224,
                     patch_size=32, projection_dim=32)


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


def _made_up_sentences(count: int = 2000) -> list[str]:
    """Sentences of made-up words, enough text for a SentencePiece vocabulary of ~1500."""
    rng = random.Random(0)
    syllables = ["ka", "to", "ri", "mu", "sen", "pho", "cat", "dog", "red", "blu", "gre", "cir",
                 "squ", "tri", "an", "on", "of", "the", "a", "ing", "er", "ly", "ba", "ne", "zo",
                 "qui", "lor", "em", "ip", "sum"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(3000)]
    return [" ".join(rng.choices(words, k=12)) for _ in range(count)]


def train_sentencepiece(vocab_size: int, **special) -> bytes:
    """A small SentencePiece model trained in-process (a fraction of a second)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_made_up_sentences()), model_writer=model,
        vocab_size=vocab_size, minloglevel=2, **special)
    return model.getvalue()


def _random_siglip(folder: Path, vocab_size: int, image_size: int, context_length: int) -> None:
    torch.manual_seed(0)
    SiglipModel(SiglipConfig(
        text_config=_tower(32, 2, 2, vocab_size=vocab_size,
                           max_position_embeddings=context_length),
        vision_config=_tower(32, 2, 2, image_size=image_size, patch_size=8),
    )).eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "SiglipImageProcessor", "processor_class": "SiglipProcessor",
        "do_resize": True, "size": {"height": image_size, "width": image_size}, "resample": 3,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }))


def save_siglip_published(folder: Path, image_size=32) -> Path:
    """Laid out as google/siglip-*: SentencePiece spiece.model, SiglipTokenizer, 64 tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = 1200
    _random_siglip(folder, vocab, image_size, 64)
    (folder / "spiece.model").write_bytes(train_sentencepiece(
        vocab, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>"))
    specials = {"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "SiglipTokenizer", "model_max_length": 64, "do_lower_case": True,
        "processor_class": "SiglipProcessor", "sp_model_kwargs": {}, **specials}))
    return folder


def save_siglip2_fixed(folder: Path, image_size=32, padding_side="right") -> Path:
    """Laid out as google/siglip2-base-patch16-224: model_type siglip, a Gemma tokenizer
    (tokenizer.model + tokenizer.json, no <bos>, <eos> appended, <pad> = 0)."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = 1500
    _random_siglip(folder, vocab + 1, image_size, 64)  # + <mask>, which Gemma's adds
    (folder / "tokenizer.model").write_bytes(train_sentencepiece(
        vocab, model_type="bpe", byte_fallback=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>"))
    tokenizer_config = {
        "tokenizer_class": "GemmaTokenizer", "add_bos_token": False, "add_eos_token": True,
        "model_max_length": 64, "padding_side": padding_side, "processor_class": "SiglipProcessor",
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    # tokenizer.json converted from tokenizer.model, as the published folder ships both.
    AutoTokenizer.from_pretrained(folder).backend_tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def save_clip_transformers5(folder: Path, source: Path) -> Path:
    """A CLIP folder as transformers 5 saves one: model.save_pretrained, then
    CLIPProcessor.save_pretrained (processor_config.json, tokenizer.json, no
    preprocessor_config.json, no vocab.json)."""
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

    CLIPModel.from_pretrained(source).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor.from_pretrained(source),
                  tokenizer=CLIPTokenizer.from_pretrained(source)).save_pretrained(folder)
    return folder
