"""Server configuration: one frozen dataclass, built once from CLI flags with env fallbacks."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path

ENV_PREFIX = "CLIP_GRPC_"
DEMO_MODEL_DIR = Path(__file__).parent / "demo_model"
MIB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    model: str = ""  # a HuggingFace model folder or a .zip of one; "" serves the demo model
    host: str = "[::]"
    port: int = 50051
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | fp32 | fp16 | bf16
    max_batch_size: int = 32
    max_wait_ms: float = 1.0  # matters only while the model is idle: batches fill as one runs
    max_queue_size: int = 4096  # items admitted and not yet answered, across all RPCs
    stream_window: int = 256  # items one stream may have in flight
    preprocess_workers: int = 0  # 0: one per CPU core
    jpeg_decode: str = "full"  # full | draft
    max_image_bytes: int = 20 * MIB
    max_image_pixels: int = 50_000_000
    max_image_aspect_ratio: float = 50.0  # longest side / shortest side
    max_message_bytes: int = 64 * MIB
    grace_seconds: float = 30.0
    log_level: str = "INFO"
    log_format: str = "json"  # json | text

    def __post_init__(self):
        for name in ("max_batch_size", "max_queue_size", "stream_window", "max_image_bytes",
                     "max_image_pixels", "max_message_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_image_aspect_ratio < 1:
            raise ValueError("max_image_aspect_ratio must be at least 1")
        if self.max_wait_ms < 0 or self.preprocess_workers < 0 or self.grace_seconds < 0:
            raise ValueError("max_wait_ms, preprocess_workers and grace_seconds can't be negative")

    @property
    def model_path(self) -> Path:
        return Path(self.model) if self.model else DEMO_MODEL_DIR

    @property
    def serves_demo_model(self) -> bool:
        return not self.model


_CHOICES = {
    "dtype": ("auto", "fp32", "fp16", "bf16"),
    "log_level": ("DEBUG", "INFO", "WARNING", "ERROR"),
    "log_format": ("json", "text"),
    "jpeg_decode": ("full", "draft"),
}
_HELP = {
    "model": "model folder or .zip (default: the shipped demo model)",
    "host": "address to bind",
    "port": "port to bind (0 picks a free one)",
    "device": "auto | cpu | cuda | cuda:N",
    "dtype": "auto (fp32 on CPU, fp16 on CUDA) | fp32 | fp16 | bf16",
    "max_batch_size": "most items in one forward pass",
    "max_wait_ms": "longest an item waits for its batch to fill while the model is idle",
    "max_queue_size": "most items in flight; beyond it requests get RESOURCE_EXHAUSTED",
    "stream_window": "most items one stream may have in flight",
    "preprocess_workers": "threads decoding images and tokenising (0: one per core)",
    "jpeg_decode": "full: exact pixels | draft: decode big JPEGs at 1/2-1/8 scale, still no "
    "smaller than the model input (about 40%% less CPU per photo, pixels differ slightly)",
    "max_image_bytes": "largest image file accepted, in bytes",
    "max_image_pixels": "largest image accepted, in pixels (decompression-bomb guard)",
    "max_image_aspect_ratio": "thinnest image accepted: longest side / shortest side (thinner "
    "ones would resize huge and crop to almost nothing)",
    "max_message_bytes": "largest gRPC message sent or received",
    "grace_seconds": "how long SIGTERM waits for in-flight work",
    "log_level": "DEBUG | INFO | WARNING | ERROR",
    "log_format": "json | text",
}


def parse_args(
    argv: list[str] | None = None, environ: dict[str, str] | None = None
) -> ServerConfig:
    """Flags win over CLIP_GRPC_* environment variables, which win over defaults."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="clip-grpc", description="Serve CLIP embeddings over gRPC."
    )
    for field in fields(ServerConfig):
        env_name = ENV_PREFIX + field.name.upper()
        default = environ.get(env_name, field.default)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(field.default),
            default=type(field.default)(default),
            choices=_CHOICES.get(field.name),
            help=f"{_HELP[field.name]} [env {env_name}, default {field.default!r}]",
        )
    try:
        return ServerConfig(**vars(parser.parse_args(argv)))
    except ValueError as error:
        parser.error(str(error))
