"""Which model folder to benchmark: the shipped demo model, a random-init ViT-B/32, or a path."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from clip_grpc.config import DEMO_MODEL_DIR

CACHE = Path(__file__).resolve().parent / ".cache"


def _factory():
    # The test helpers build random-weight folders with the real tokenizer; imported lazily
    # because only these cases need them.
    from tests import model_factory

    return model_factory


def _build_once(folder: Path, build: Callable[[Path], Path]) -> Path:
    """Build into a temporary sibling and rename, so an interrupted build is never reused."""
    if not (folder / "config.json").is_file():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        build(partial)
        partial.rename(folder)
    return folder


def resolve(name: str) -> tuple[Path, str]:
    """A model folder and a description of it. Random-weight folders are built once in CACHE."""
    if name == "demo":
        if (DEMO_MODEL_DIR / "model.safetensors").is_file():
            return DEMO_MODEL_DIR, "shipped demo model"
        folder = _build_once(CACHE / "tiny-clip", _factory().save_clip)
        return folder, "tiny random CLIP (the demo model is not in clip_grpc/demo_model yet)"
    if name == "vit-b32":
        folder = CACHE / "vit-b32"
        if not (folder / "config.json").is_file():
            print(f"building a random-init ViT-B/32 in {folder} (once, ~600 MB)", flush=True)
        _build_once(folder, _factory().save_vit_b32)
        return folder, "random-init ViT-B/32 (speed depends on the architecture, not weights)"
    if name == "near-free":
        folder = _build_once(CACHE / "near-free-clip", _factory().save_near_free)
        return folder, "random CLIP with a nearly free forward pass (1 layer, 32 wide, 224 px)"
    folder = Path(name)
    if not folder.exists():
        raise SystemExit(f"--model {name}: no such folder or file (use demo, vit-b32 or a path)")
    return folder, str(folder)
