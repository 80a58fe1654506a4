"""`python -m clip_grpc`: serve CLIP embeddings over gRPC."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from .config import parse_args
from .errors import ModelLoadError, StartupError
from .logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    # torch's OpenMP workers spin after every operation by default, taking the cores from the
    # preprocessing threads and the event loop; sleeping instead measured 2.7x the images/s and
    # 4x the texts/s on 2 shared cores (BENCHMARKS.md). libgomp reads it once, as torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # The engine tokenises a message's texts in one batch call; with parallelism on, the Rust
    # tokenizer fans each call out to a thread pool of its own, whose hand-offs cost more than
    # they save for a message's few short texts: 356 -> 255 us of server CPU per text measured
    # (BENCHMARKS.md, serving overhead). The preprocess threads already spread the messages.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["convert"]:  # `clip-grpc convert SRC DEST`: see clip_grpc/model/convert.py
        from .model.convert import main as convert

        return convert(argv[1:])
    config = parse_args(argv)
    setup_logging(config.log_level, config.log_format)
    if config.serves_demo_model:
        logging.getLogger("clip_grpc").info(
            "no --model given: serving the shipped demo model (a tiny CLIP trained on drawn "
            "shapes, not a general CLIP)",
            extra={"model": str(config.model_path)},
        )
    if config.workers > 1:  # the supervisor never imports torch: the workers do
        from .workers import supervise

        return supervise(config)
    from .server import serve  # imports torch

    try:
        asyncio.run(serve(config))
    except ModelLoadError as error:
        logging.getLogger("clip_grpc").error("model did not load: %s", error)
        return 2
    except StartupError as error:
        logging.getLogger("clip_grpc").error("cannot start: %s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
