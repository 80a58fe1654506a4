"""`--compile`: torch.compile over fixed batch sizes and text widths, all warmed up at start.

A batch is padded up to the next batch bucket (powers of two up to the modality's batch limit,
and the limit) and its outputs are sliced back; a CLIP text batch is padded to the next width
bucket (16, 32, 64 ... tokens, and the context), SigLIP's to the context as always. So the model
only ever sees a known, small set of shapes, each run once at start. The towers are compiled with
dynamic shapes (about two compiles per tower: batch 1 is specialised), not once per shape; on
CUDA the mode is "reduce-overhead", which records one CUDA graph per shape (one launch per batch
instead of one per kernel); on CPU the default mode (fused C++ kernels).
"""

from __future__ import annotations

import bisect
import importlib.util
import os
import shutil

import torch
import torch._dynamo.config
import torch._inductor.config

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


def text_widths(context_length: int) -> tuple[int, ...]:
    """16, 32, 64 ... below the context, then the context: a text pads to at most twice its
    tokens (or 16), where padding every text to the context costs 3.3x on short ones."""
    return buckets_up_to(context_length)[4:] if context_length > 16 else (context_length,)


def compile_forward(function, device: torch.device, shapes: int):
    """torch.compile for a tower that will see `shapes` input shapes. Past dynamo's recompile
    limit it would go back to eager in silence: raise instead. On CUDA, record a graph for
    every shape without warning about their number."""
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    if device.type == "cuda":
        triton = torch._inductor.config.triton
        triton.cudagraph_dynamic_shape_warn_limit = max(
            triton.cudagraph_dynamic_shape_warn_limit or 0, shapes)
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(function, mode=mode, dynamic=True)
