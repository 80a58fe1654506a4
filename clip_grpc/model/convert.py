"""`clip-grpc convert SRC DEST`: an OpenAI CLIP `.pt` or an open_clip checkpoint -> a HuggingFace
CLIPModel folder the server loads, checked against the checkpoint's own forward before it is kept.

Sources (ViT image towers only: HuggingFace's CLIPModel has no ResNet, timm or HF-text towers):
- OpenAI CLIP `.pt`: the TorchScript archive OpenAI publishes (fp16) or a plain state dict saved
  with torch.save. QuickGELU, OpenAI's mean/std, heads = width / 64, as OpenAI's build_model.
- open_clip: a folder with `open_clip_config.json` and `open_clip_model.safetensors` or
  `open_clip_pytorch_model.bin` (or a checkpoint file with that config beside it). The activation
  follows the config's `quick_gelu` (GELU when absent, as open_clip does); mean, std,
  interpolation and resize mode follow its `preprocess_cfg`.
No open_clip import: the state dict is mapped key by key (see openai_layout.py for the layout).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelLoadError
from . import openai_layout
from .images import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from .openai_layout import Architecture

log = logging.getLogger(__name__)

TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "demo_model"  # the real CLIP BPE
TOKENIZER_FILES = ("vocab.json", "merges.txt", "special_tokens_map.json", "TOKENIZER_LICENSE")
CLIP_VOCAB_SIZE = 49408
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# Keys some checkpoints carry that are not weights: OpenAI's TorchScript sizes, old causal masks.
NOT_WEIGHTS = ("input_resolution", "context_length", "vocab_size", "attn_mask")
RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1}
MAX_RELATIVE_ERROR = 1e-4
VERIFY_TEXTS = ("a photo of a cat", "a red circle on a blue background", "x",
                "Two people riding bicycles along a river at sunset, with mountains behind")
# open_clip config options that change the architecture away from what CLIPModel computes,
# with the value that keeps it standard.
STANDARD_VISION = {"timm_model_name": None, "attentional_pool": False, "pool_type": "tok",
                   "final_ln_after_pool": False, "no_ln_pre": False, "ls_init_value": None,
                   "output_tokens": False, "input_patchnorm": False, "global_average_pool": False}
STANDARD_TEXT = {"hf_model_name": None, "pool_type": "argmax", "no_causal_mask": False,
                 "proj_bias": False, "embed_cls": False, "ls_init_value": None,
                 "final_ln_after_pool": False, "output_tokens": False, "proj_type": "linear"}


class ConversionError(ModelLoadError):
    """The source can't be converted faithfully; nothing was written."""


@dataclass
class Source:
    state: dict[str, torch.Tensor]  # float32, OpenAI key names
    arch: Architecture
    image: dict  # preprocessor_config.json settings
    kind: str  # "OpenAI CLIP" or "open_clip"


# -- reading the source --------------------------------------------------------------------------

def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        elif _is_torchscript(path):
            state = torch.jit.load(path, map_location="cpu").state_dict()
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # each format raises its own kinds
        raise ConversionError(f"{path}: not a readable checkpoint ({error})") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return {
        key: value.float() if value.is_floating_point() else value
        for key, value in state.items()
        if isinstance(value, torch.Tensor) and key.split(".")[-1] not in NOT_WEIGHTS
    }


def _check_vit(path: Path, state: dict) -> None:
    if "visual.conv1.weight" in state and "visual.class_embedding" in state:
        return
    if any(k.startswith("visual.layer1.") for k in state):
        what = "a ResNet image tower (RN50, RN101, RN50x4...)"
    elif any(k.startswith(("visual.trunk.", "text.")) for k in state):
        what = "a timm or HuggingFace tower (open_clip's CustomTextCLIP / TimmModel)"
    else:
        what = f"keys such as {', '.join(sorted(state)[:3])}"
    raise ConversionError(
        f"{path}: not an OpenAI/open_clip ViT CLIP state dict ({what}); HuggingFace's CLIPModel "
        "has only ViT towers. Look for a HuggingFace folder of that model instead"
    )


def _activation(choice: str, default: str) -> str:
    return default if choice == "auto" else choice


def read_openai(path: Path, activation: str) -> Source:
    state = read_state_dict(path)
    _check_vit(path, state)
    arch = openai_layout.read_architecture(state, _activation(activation, "quick_gelu"))
    image = _preprocessor(arch.image_size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "bicubic",
                          "shortest")
    return Source(state, arch, image, "OpenAI CLIP")


def _open_clip_files(source: Path) -> tuple[Path, Path]:
    if source.is_dir():
        config = source / OPEN_CLIP_CONFIG
        weights = [source / n for n in OPEN_CLIP_WEIGHTS if (source / n).is_file()]
        if not weights:
            weights = sorted(p for p in source.iterdir()
                             if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
        if not config.is_file() or not weights:
            raise ConversionError(
                f"{source}: an open_clip folder needs {OPEN_CLIP_CONFIG} and one of "
                f"{', '.join(OPEN_CLIP_WEIGHTS)}"
            )
        return config, weights[0]
    return source.parent / OPEN_CLIP_CONFIG, source


def _is_standard(value, standard) -> bool:
    return value is None or value == standard or (not standard and not value)


def read_open_clip(source: Path, activation: str) -> Source:
    config_path, weights = _open_clip_files(source)
    config = json.loads(config_path.read_text())
    model_cfg = config.get("model_cfg", config)  # the hub file nests it; open_clip's own doesn't
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    for where, cfg, standard in (("vision_cfg", vision, STANDARD_VISION),
                                 ("text_cfg", text, STANDARD_TEXT)):
        for option, value in standard.items():
            if not _is_standard(cfg.get(option), value):
                raise ConversionError(
                    f"{config_path}: {where}.{option} = {cfg[option]!r} changes the architecture "
                    "away from what HuggingFace's CLIPModel computes; it can't be converted"
                )
    if isinstance(vision.get("layers"), list):
        raise ConversionError(f"{config_path}: a ResNet image tower; CLIPModel has only ViTs")
    if model_cfg.get("init_logit_bias") is not None:
        raise ConversionError(
            f"{config_path}: an open_clip SigLIP; serve a HuggingFace google/siglip-* folder"
        )
    named_quick = "quickgelu" in (str(config.get("model_name", "")) + source.name).lower()
    default = "quick_gelu" if model_cfg.get("quick_gelu", named_quick) else "gelu"
    state = read_state_dict(weights)
    _check_vit(weights, state)
    arch = openai_layout.read_architecture(
        state, _activation(activation, default), text_heads=text.get("heads", 8),
        vision_head_width=vision.get("head_width", 64),
    )
    preprocess = config.get("preprocess_cfg", {})
    image = _preprocessor(
        arch.image_size, preprocess.get("mean", OPENAI_CLIP_MEAN),
        preprocess.get("std", OPENAI_CLIP_STD), preprocess.get("interpolation", "bicubic"),
        preprocess.get("resize_mode", "shortest"), config_path,
    )
    return Source(state, arch, image, "open_clip")


def _preprocessor(size: int, mean, std, interpolation: str, resize_mode: str,
                  where: Path | None = None) -> dict:
    if interpolation not in RESAMPLE or resize_mode not in ("shortest", "squash"):
        raise ConversionError(
            f"{where}: preprocess_cfg interpolation {interpolation!r} / resize_mode "
            f"{resize_mode!r} has no CLIPImageProcessor equivalent (supported: "
            f"{', '.join(RESAMPLE)}; shortest or squash)"
        )
    squash = resize_mode == "squash"
    return {
        "image_processor_type": "CLIPImageProcessor", "processor_class": "CLIPProcessor",
        "do_resize": True,
        "size": {"height": size, "width": size} if squash else {"shortest_edge": size},
        "resample": RESAMPLE[interpolation],
        "do_center_crop": not squash, "crop_size": {"height": size, "width": size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(mean), "image_std": list(std), "do_convert_rgb": True,
    }


def read_source(source: Path, activation: str = "auto") -> Source:
    if not source.exists():
        raise ConversionError(f"{source} does not exist")
    if (source.is_dir() and (source / OPEN_CLIP_CONFIG).is_file()) or (
        source.is_file() and (source.parent / OPEN_CLIP_CONFIG).is_file()
    ):
        return read_open_clip(source, activation)
    if source.is_dir():
        raise ConversionError(
            f"{source}: a folder without {OPEN_CLIP_CONFIG}; give an OpenAI CLIP .pt file or an "
            "open_clip folder"
        )
    return read_openai(source, activation)


# -- the HuggingFace side -----------------------------------------------------------------------

_BLOCK_PARTS = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1",
                "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
_SINGLE = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"visual.proj": "visual_projection.weight",
               "text_projection": "text_projection.weight"}


def to_hf_state_dict(source: Source) -> dict[str, torch.Tensor]:
    """OpenAI key names -> CLIPModel's; every source tensor must find its place."""
    state, arch, out, used = source.state, source.arch, {}, set()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return state[key]

    towers = (("visual.transformer.resblocks.", "vision_model.encoder.layers.", arch.vision_layers),
              ("transformer.resblocks.", "text_model.encoder.layers.", arch.text_layers))
    for src, dst, layers in towers:
        for i in range(layers):
            s, d = f"{src}{i}.", f"{dst}{i}."
            weights = take(s + "attn.in_proj_weight").chunk(3)
            biases = take(s + "attn.in_proj_bias").chunk(3)
            for name, weight, bias in zip("qkv", weights, biases, strict=True):
                out[f"{d}self_attn.{name}_proj.weight"] = weight.contiguous()
                out[f"{d}self_attn.{name}_proj.bias"] = bias.contiguous()
            for old, new in _BLOCK_PARTS.items():
                for part in ("weight", "bias"):
                    out[f"{d}{new}.{part}"] = take(f"{s}{old}.{part}")
    for old, new in _SINGLE.items():
        out[new] = take(old)
    for old, new in _TRANSPOSED.items():
        out[new] = take(old).t().contiguous()
    left = sorted(set(state) - used)
    if left:
        raise ConversionError(
            f"the checkpoint has tensors CLIPModel has no place for ({', '.join(left[:5])}"
            f"{', ...' if len(left) > 5 else ''}): a variant of the architecture that can't be "
            "converted faithfully"
        )
    return out


def hf_config(arch: Architecture):
    from transformers import CLIPConfig

    def tower(width, layers, heads, mlp, **extra):
        return dict(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                    intermediate_size=mlp, hidden_act=arch.activation,
                    layer_norm_eps=openai_layout.LAYER_NORM_EPS, projection_dim=arch.embed_dim,
                    **extra)

    return CLIPConfig(
        text_config=tower(arch.text_width, arch.text_layers, arch.text_heads, arch.text_mlp,
                          vocab_size=arch.vocab_size, max_position_embeddings=arch.context_length,
                          bos_token_id=49406, eos_token_id=49407),
        vision_config=tower(arch.vision_width, arch.vision_layers, arch.vision_heads,
                            arch.vision_mlp, image_size=arch.image_size,
                            patch_size=arch.patch_size),
        projection_dim=arch.embed_dim,
    )


def write_folder(source: Source, folder: Path) -> None:
    from transformers import CLIPModel

    arch = source.arch
    if arch.vocab_size != CLIP_VOCAB_SIZE:
        raise ConversionError(
            f"the text tower has a {arch.vocab_size}-token vocabulary, not CLIP's "
            f"{CLIP_VOCAB_SIZE}; the only tokenizer this converter has is CLIP's BPE"
        )
    for tower, width, heads in (("image", arch.vision_width, arch.vision_heads),
                                ("text", arch.text_width, arch.text_heads)):
        if heads < 1 or width % heads:
            raise ConversionError(f"the {tower} tower's width {width} does not split into "
                                  f"{heads} attention heads")
    model = CLIPModel(hf_config(arch))
    missing, unexpected = model.load_state_dict(to_hf_state_dict(source), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ConversionError(f"CLIPModel did not take the mapped weights: missing {missing}, "
                              f"unexpected {unexpected}")
    model.eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(source.image, indent=2))
    for name in TOKENIZER_FILES:
        shutil.copy(TOKENIZER_DIR / name, folder / name)
    tokenizer_config = json.loads((TOKENIZER_DIR / "tokenizer_config.json").read_text())
    tokenizer_config["model_max_length"] = arch.context_length
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))


# -- checking it ---------------------------------------------------------------------------------

def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float((np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)).max())


def verify(source: Source, folder: Path) -> float:
    """Embed a few images and texts with the written folder, loaded as the server loads it, and
    with the checkpoint's own forward; return the worst relative difference."""
    from .encoder import Encoder
    from .loading import load_model
    from .texts import TextTokenizer

    arch = source.arch
    loaded = load_model(folder, device="cpu", dtype="fp32")
    encoder = Encoder(loaded)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(3, 3, arch.image_size, arch.image_size, generator=generator)
    tokenize = TextTokenizer(loaded.tokenizer, loaded.context_length)
    ids = [tokenize(text) for text in VERIFY_TEXTS]
    padded = torch.zeros(len(ids), arch.context_length, dtype=torch.long)  # as OpenAI pads
    for row, tokens in enumerate(ids):
        padded[row, : len(tokens)] = torch.tensor(tokens)
    with torch.inference_mode():
        want_images = openai_layout.encode_image(source.state, arch, pixels).numpy()
        want_texts = openai_layout.encode_text(source.state, arch, padded).numpy()
    got_images = encoder.embed_images(list(pixels.numpy()))
    got_texts = encoder.embed_texts(ids)
    return max(relative_error(got_images, want_images), relative_error(got_texts, want_texts))


def convert(source_path: Path, destination: Path, activation: str = "auto") -> float:
    """Write DEST only when it embeds as the checkpoint does; returns the difference found."""
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise ConversionError(f"{destination} already exists and is not empty")
    source = read_source(source_path, activation)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=destination.name + ".partial-",
                                    dir=destination.parent))
    try:
        write_folder(source, partial)
        error = verify(source, partial)
        if not error <= MAX_RELATIVE_ERROR:
            raise ConversionError(
                f"the converted model embeds differently from {source_path}'s own forward "
                f"(relative difference {error:.2e}, limit {MAX_RELATIVE_ERROR:.0e}); "
                f"nothing was written to {destination}"
            )
        if destination.exists():
            destination.rmdir()
        partial.rename(destination)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="clip-grpc convert",
        description="Convert an OpenAI CLIP .pt or an open_clip checkpoint into a HuggingFace "
        "CLIPModel folder for --model, checked against the checkpoint's own forward.",
    )
    parser.add_argument("source", type=Path, help="OpenAI CLIP .pt file, or an open_clip folder "
                        f"({OPEN_CLIP_CONFIG} + weights) or checkpoint file")
    parser.add_argument("destination", type=Path, help="the folder to write (new or empty)")
    parser.add_argument("--activation", choices=("auto", "quick_gelu", "gelu"), default="auto",
                        help="auto: QuickGELU for OpenAI checkpoints, open_clip's quick_gelu flag")
    args = parser.parse_args(argv)
    try:
        error = convert(args.source, args.destination, args.activation)
    except ModelLoadError as failure:
        print(f"clip-grpc convert: {failure}", file=sys.stderr)
        return 2
    print(f"wrote {args.destination}; serve it with `clip-grpc --model {args.destination}` "
          f"(checked: largest relative difference from the checkpoint's own forward {error:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
