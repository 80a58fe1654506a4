"""Load a CLIP or SigLIP model folder (or a .zip of one) from local files only, and check it."""

from __future__ import annotations

import json
import logging
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, CLIPTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from ..errors import ModelLoadError
from .images import ImageTransform
from .layouts import family_of, image_processor_config, refuse_known_unsupported

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    image_transform: ImageTransform
    family: str
    name: str
    source: str
    device: torch.device
    dtype: torch.dtype
    context_length: int
    embedding_dim: int
    logit_scale: float
    logit_bias: float
    pad_token_id: int
    padding_side: str = "right"  # where the tokenizer puts padding: "right" or "left"

    @property
    def dtype_name(self) -> str:
        return {v: k for k, v in DTYPES.items()}[self.dtype]


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for, but torch sees no CUDA device")
    return chosen


def native_bf16(device: torch.device) -> bool:
    """Whether this CUDA device computes in bf16 natively (Ampere and later). Emulated bf16 is
    slow, so it counts as no."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto: fp32 on CPU; on CUDA bf16 where the GPU has it (fp16's speed, fp32's range: no
    overflow in the towers' activations), else fp16."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if native_bf16(device) else torch.float16
    if dtype not in DTYPES:
        raise ModelLoadError(f"--dtype must be auto, fp32, fp16 or bf16, not {dtype!r}")
    return DTYPES[dtype]


def unpack_zip(path: Path, into: Path) -> Path:
    """Extract a zipped model and return the folder inside it that holds config.json."""
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():  # refuse paths that climb out of the folder
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ModelLoadError(f"{path}: unsafe path in zip: {member}")
            archive.extractall(into)
    except zipfile.BadZipFile as error:
        raise ModelLoadError(f"{path}: not a readable zip ({error})") from error
    configs = sorted(into.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise ModelLoadError(f"{path}: the zip holds no config.json")
    return configs[0].parent


def check_folder(folder: Path) -> dict:
    """Name every missing file at once, then return the parsed config.json."""
    refuse_known_unsupported(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} does not exist")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append("weights (" + " or ".join(WEIGHT_FILES) + ")")
    if image_processor_config(folder) is None:
        missing.append(
            "preprocessor_config.json (or processor_config.json with an image_processor inside)"
        )
    has_bpe = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    others = ("tokenizer.json", "spiece.model", "tokenizer.model")
    if not (has_bpe or any((folder / name).is_file() for name in others)):
        missing.append(
            "tokenizer files (vocab.json + merges.txt, tokenizer.json, spiece.model or "
            "tokenizer.model)"
        )
    if missing:
        raise ModelLoadError(f"model folder {folder} is missing: {', '.join(missing)}")
    config = json.loads((folder / "config.json").read_text())
    family_of(folder, config)
    return config


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    try:
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        else:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        # transformers builds a near-empty tokenizer instead of failing on some broken folders.
        probe = tokenizer("a photo of a cat", add_special_tokens=False).input_ids
    except Exception as error:  # tokenizers raises plain Exception on broken files
        raise ModelLoadError(f"{folder}: the tokenizer did not load: {error}") from error
    if len(tokenizer) < 1000 or len(set(probe)) < 3:
        raise ModelLoadError(
            f"{folder}: the tokenizer loaded with {len(tokenizer)} tokens and encodes "
            f"'a photo of a cat' as {probe}; its files are incomplete"
        )
    return tokenizer


def load_model(source: str | Path, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    source = Path(source)
    if source.suffix == ".zip":
        # The temp folder lives as long as the process: weights are read lazily on some paths.
        folder = unpack_zip(source, Path(tempfile.mkdtemp(prefix="clip-model-")))
    else:
        folder = source
    config = check_folder(folder)
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    tokenizer = load_tokenizer(folder)
    transform = ImageTransform.from_preprocessor_config(image_processor_config(folder))
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch_dtype)
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelLoadError(f"{folder}: the weights did not load: {error}") from error
    model = model.to(torch_device).eval()
    family = family_of(folder, config)
    text_config = model.config.text_config
    bias = getattr(model, "logit_bias", None)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        image_transform=transform,
        family=family,
        name=source.stem if source.suffix == ".zip" else folder.name,
        source=str(source.resolve()),
        device=torch_device,
        dtype=torch_dtype,
        context_length=text_config.max_position_embeddings,
        embedding_dim=getattr(model.config, "projection_dim", None) or text_config.hidden_size,
        logit_scale=float(model.logit_scale.detach().float().exp().item()),
        logit_bias=float(bias.detach().float().item()) if bias is not None else 0.0,
        pad_token_id=int(pad_id),
        padding_side=tokenizer.padding_side,
    )
