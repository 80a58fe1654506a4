"""Server configuration: one frozen dataclass, built once from CLI flags with env fallbacks.

Each setting is declared once below (default, help, choices, bounds); `clip_grpc.settings`
turns the declarations into flags, CLIP_GRPC_* environment variables, --help and checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .settings import check_settings, parse_settings, setting

ENV_PREFIX = "CLIP_GRPC_"
DEMO_MODEL_DIR = Path(__file__).parent / "demo_model"
MIB = 1024 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")
MODALITIES = ("image", "text")
# Most items per forward pass when no flag says: a CPU gains little past 32 (BENCHMARKS.md),
# a GPU is mostly idle at 32 and wants hundreds of texts (BENCHMARKS.md, "On a GPU").
DEVICE_BATCH_LIMITS = {"cpu": {"image": 32, "text": 32}, "cuda": {"image": 128, "text": 512}}
REFLECTION_MODES = ("on", "off", "auth")


@dataclass(frozen=True)
class ServerConfig:
    model: str = setting(
        "", "HuggingFace CLIP/SigLIP model folder or .zip (empty: the shipped demo model)")
    host: str = setting("[::]", "address to bind")
    port: int = setting(50051, "port to bind (0 picks a free one)", minimum=0, maximum=65535)
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    dtype: str = setting(
        "auto", "number format of the weights; auto: fp32 on CPU; on CUDA bf16 where the GPU "
        "has it (Ampere and later), else fp16", choices=("auto", "fp32", "fp16", "bf16"))
    max_batch_size: int = setting(
        0, "most items in one forward pass, images and texts alike, where the per-modality "
        "flags are not given (0: by device, see --max-image-batch-size and "
        "--max-text-batch-size)", minimum=0)
    max_image_batch_size: int = setting(
        0, "most images in one forward pass (0: --max-batch-size if given, else by device: "
        f"{DEVICE_BATCH_LIMITS['cpu']['image']} on CPU, {DEVICE_BATCH_LIMITS['cuda']['image']} "
        "on CUDA)", minimum=0)
    max_text_batch_size: int = setting(
        0, "most texts in one forward pass (0: --max-batch-size if given, else by device: "
        f"{DEVICE_BATCH_LIMITS['cpu']['text']} on CPU, {DEVICE_BATCH_LIMITS['cuda']['text']} "
        "on CUDA)", minimum=0)
    compile: bool = setting(
        False, "torch.compile the model for fixed batch sizes (powers of two up to each batch "
        "limit) and text widths (16, 32, 64 tokens, the context); CUDA graphs on CUDA; every "
        "shape compiled and run at start: slower start, faster batches")
    # The batcher waits only while Batcher.coming counts items still in preparation; under load
    # batches fill as the previous one runs.
    max_wait_ms: float = setting(
        1.0, "longest a batch waits to fill, and only while more items of its kind are still "
        "being prepared (images decoded, texts tokenised); with none on their way it runs at "
        "once", minimum=0)
    max_queue_size: int = setting(
        4096, "most items in flight across all RPCs; beyond it RESOURCE_EXHAUSTED", minimum=1)
    stream_window: int = setting(256, "most items one stream may have in flight", minimum=1)
    preprocess_workers: int = setting(
        0, "threads decoding images and tokenising, per worker process (0: one per core, "
        "or the worker's share of the cores)", minimum=0)
    torch_threads: int = setting(
        0, "torch's CPU threads for the forward pass (0: by device: 1 on CUDA, where the "
        "forward runs on the GPU and more threads would only take cores from decoding; on "
        "CPU, OMP_NUM_THREADS or one per core, or the worker's share of the cores)", minimum=0)
    workers: int = setting(
        1, "server processes sharing --port (SO_REUSEPORT; the kernel spreads client "
        "connections, not calls, over them), each with its own model copy (on CUDA: on the "
        "same GPU) and its share of the cores; for hosts whose cores could feed more than one "
        "Python process can", minimum=1)
    jpeg_decode: str = setting(
        "full", "full: exact pixels; draft: decode big JPEGs at 1/2-1/8 scale, still no smaller "
        "than the model input (about 40% less CPU per photo, pixels differ slightly)",
        choices=("full", "draft"))
    max_image_bytes: int = setting(20 * MIB, "largest image file accepted, in bytes", minimum=1)
    max_image_pixels: int = setting(
        50_000_000, "largest image accepted, in pixels (decompression-bomb guard)", minimum=1)
    max_image_aspect_ratio: float = setting(
        50.0, "thinnest image accepted: longest side / shortest side (thinner ones would resize "
        "huge and crop to almost nothing)", minimum=1)
    max_text_chars: int = setting(
        4096, "longest text in characters; longer ones are refused (cut, with truncate) before "
        "the tokenizer sees them", minimum=1)
    max_message_bytes: int = setting(
        64 * MIB, "largest gRPC message sent or received", minimum=1)
    grace_seconds: float = setting(30.0, "how long SIGTERM waits for in-flight work", minimum=0)
    metrics_port: int = setting(
        9090, "port for Prometheus GET /metrics, on --host (0: no metrics endpoint)",
        minimum=0, maximum=65535)
    max_connection_age_s: float = setting(
        0.0, "close each client connection (GOAWAY) after this many seconds, so clients "
        "re-resolve and find new replicas (0: never)", minimum=0)
    max_connection_age_grace_s: float = setting(
        0.0, "how long calls in flight on an aged connection may still run (0: no limit)",
        minimum=0)
    min_ping_interval_s: float = setting(
        5.0, "most frequent keepalive ping accepted from a client, with or without calls; "
        "faster pingers are cut with GOAWAY too_many_pings", minimum=0.001)
    tls_cert: str | None = setting(
        None, "PEM certificate chain: serve TLS (re-read on SIGHUP or when it changes)")
    tls_key: str | None = setting(None, "PEM private key of --tls-cert")
    tls_client_ca: str | None = setting(
        None, "PEM CA certificates: require client certificates signed by them (mTLS)")
    auth_token_file: str | None = setting(
        None, "file of tokens, one per line: every ClipService call needs 'authorization: "
        "Bearer <token>' (UNAUTHENTICATED otherwise; health stays open); re-read on SIGHUP or "
        "when it changes")
    health_port: int = setting(
        0, "also answer grpc.health.v1 alone, in plaintext, on this port of --host, for probes "
        "that cannot speak TLS (kubelet's gRPC probe); 0: no such port", minimum=0,
        maximum=65535)
    reflection: str = setting(
        "on", "server reflection: on, off, or auth (needs a token, with --auth-token-file)",
        choices=REFLECTION_MODES)
    log_level: str = setting("INFO", "least severe level logged", choices=LOG_LEVELS,
                             parse=str.upper)
    log_format: str = setting("json", "json: one object per line; text: for humans",
                              choices=LOG_FORMATS)

    def __post_init__(self):
        check_settings(self)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        if self.reflection == "auth" and self.auth_token_file is None:
            raise ValueError("--reflection auth needs --auth-token-file")
        if self.workers > 1 and self.port == 0:
            raise ValueError("--workers above 1 needs a fixed --port: the workers share it")

    @property
    def model_path(self) -> Path:
        return Path(self.model) if self.model else DEMO_MODEL_DIR

    @property
    def serves_demo_model(self) -> bool:
        return not self.model


def _device_kind(device) -> str:
    """"cuda" for a torch.device of type cuda or a name "cuda"/"cuda:N"; likewise "cpu"."""
    return getattr(device, "type", None) or str(device).partition(":")[0]


def batch_limits(config: ServerConfig, device) -> dict[str, int]:
    """Most items in one forward pass, per modality, on this device (a torch.device or its name).

    The first that is set wins: the modality's own flag, then --max-batch-size, then the
    device's default (CUDA's for "cuda"/"cuda:N", the CPU's for every other device).
    """
    defaults = DEVICE_BATCH_LIMITS.get(_device_kind(device), DEVICE_BATCH_LIMITS["cpu"])
    own = {"image": config.max_image_batch_size, "text": config.max_text_batch_size}
    return {m: own[m] or config.max_batch_size or defaults[m] for m in MODALITIES}


def torch_threads(config: ServerConfig, device) -> int | None:
    """torch's CPU threads on this device, or None to leave torch's own choice (on CPU:
    OMP_NUM_THREADS, which a worker process sets to its share of the cores)."""
    return config.torch_threads or (1 if _device_kind(device) == "cuda" else None)


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """Flags win over CLIP_GRPC_* environment variables, which win over defaults."""
    return parse_settings(
        ServerConfig, argv, environ, prog="clip-grpc",
        description="Serve CLIP embeddings over gRPC. OpenAI CLIP .pt and open_clip "
        "checkpoints: `clip-grpc convert SRC DEST` first (see `clip-grpc convert --help`).",
        env_prefix=ENV_PREFIX,
    )
