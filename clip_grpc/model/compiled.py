"""`--compile`: torch.compile over fixed batch sizes, so every shape is compiled once, at start.

A batch is padded up to the next bucket (powers of two up to the modality's batch limit, and the
limit) and the outputs are sliced back; texts are padded to the context length, so each bucket
is one static shape. On CUDA the mode is "reduce-overhead" (CUDA graphs: one launch per batch
instead of one per kernel); on CPU the default mode (fused C++ kernels).
"""

from __future__ import annotations

import bisect
import importlib.util
import os
import shutil

import torch
import torch._dynamo.config

from ..errors import StartupError


def buckets_up_to(limit: int) -> tuple[int, ...]:
    """1, 2, 4, ... below limit, then limit: a batch pads to at most twice its size."""
    sizes, size = [], 1
    while size < limit:
        sizes.append(size)
        size *= 2
    return (*sizes, limit)


def bucket_for(count: int, buckets: tuple[int, ...]) -> int:
    return buckets[bisect.bisect_left(buckets, count)]


def check_compile_possible(device: torch.device) -> None:
    """Refuse --compile at startup where torch.compile cannot build kernels, rather than
    falling back to eager in silence."""
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            raise StartupError(
                "--compile on CUDA needs triton (it comes with CUDA builds of torch); "
                "install it or leave --compile off")
    elif device.type == "cpu":
        compilers = [os.environ.get("CXX"), "g++", "c++", "clang++"]
        if not any(name and shutil.which(name) for name in compilers):
            raise StartupError(
                "--compile on CPU needs a C++ compiler (g++, c++, clang++ or $CXX) and none "
                "was found; install one or leave --compile off")
    else:
        raise StartupError(f"--compile supports cpu and cuda devices, not {device.type}")


def compile_forward(function, device: torch.device, shapes: int):
    """torch.compile for `shapes` static input shapes, each compiled once (dynamo recompiles
    per shape and gives up, back to eager, past its recompile limit: raise it to fit)."""
    if torch._dynamo.config.recompile_limit < shapes + 1:
        torch._dynamo.config.recompile_limit = shapes + 1
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(function, mode=mode, dynamic=False)
