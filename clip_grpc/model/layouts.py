"""Which model folder layouts the server reads, and a clear refusal, with a way out, for the rest.

Served directly: HuggingFace CLIP (`model_type: clip`) and SigLIP / fixed-resolution SigLIP 2
(`model_type: siglip`) folders, with the image preprocessing in `preprocessor_config.json`
(transformers 4 and the published google/siglip-* folders) or nested in `processor_config.json`
(what `CLIPProcessor.save_pretrained` writes in transformers 5). OpenAI `.pt` checkpoints and
open_clip folders go through `clip-grpc convert` first (clip_grpc/model/convert.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelLoadError

FAMILIES = {"clip": "clip", "siglip": "siglip"}  # config.json model_type -> family
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
OPEN_CLIP_CONFIG = "open_clip_config.json"


def convert_hint(source: Path) -> str:
    return f"convert it first: `clip-grpc convert {source} DEST`, then serve `--model DEST`"


def image_processor_config(folder: Path) -> dict | None:
    """The image processor's settings, from whichever file this layout keeps them in."""
    preprocessor = folder / "preprocessor_config.json"
    if preprocessor.is_file():
        return json.loads(preprocessor.read_text())
    processor = folder / "processor_config.json"
    if processor.is_file():
        nested = json.loads(processor.read_text()).get("image_processor")
        if isinstance(nested, dict):
            return nested
    return None


def refuse_known_unsupported(source: Path) -> None:
    """Layouts we recognise but do not serve as they are: say what they are and what works."""
    if source.is_file() and source.suffix in CHECKPOINT_SUFFIXES:
        raise ModelLoadError(
            f"{source} is a single checkpoint file; --model takes a HuggingFace model folder "
            f"(or a .zip of one). If it is an OpenAI CLIP checkpoint, {convert_hint(source)}"
        )
    if not source.is_dir() or (source / "config.json").is_file():
        return
    if (source / OPEN_CLIP_CONFIG).is_file():
        raise ModelLoadError(
            f"{source} is an open_clip model folder ({OPEN_CLIP_CONFIG}, no config.json); "
            f"the server reads HuggingFace folders: {convert_hint(source)}"
        )
    checkpoints = sorted(p.name for p in source.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
    if checkpoints:
        raise ModelLoadError(
            f"{source} holds weights ({', '.join(checkpoints)}) but no config.json, so their "
            "architecture is unknown. A HuggingFace CLIP or SigLIP folder has config.json, "
            "weights, a preprocessor and tokenizer files; for an OpenAI CLIP .pt or an open_clip "
            f"checkpoint, convert it: `clip-grpc convert {source / checkpoints[0]} DEST`"
        )


def family_of(folder: Path, config: dict) -> str:
    model_type = config.get("model_type")
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    if model_type == "siglip2":
        raise ModelLoadError(
            f"{folder / 'config.json'}: model_type 'siglip2' is SigLIP 2 NaFlex (variable "
            "resolution: images become a variable number of patches with a mask), which this "
            "server's fixed-size image path does not serve; the fixed-resolution SigLIP 2 "
            "checkpoints (model_type 'siglip', e.g. siglip2-base-patch16-224) work"
        )
    weights = [p.name for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES]
    raise ModelLoadError(
        f"{folder / 'config.json'}: model_type {model_type!r} is not supported, so its weights "
        f"({', '.join(sorted(weights)) or 'none found'}) can't be served (supported: "
        f"{', '.join(FAMILIES)} folders; OpenAI CLIP .pt and open_clip checkpoints after "
        "`clip-grpc convert SRC DEST`)"
    )
