"""`python -m bench.decode_pool`: decoding images on threads vs on a process pool.

The server decodes and preprocesses images on threads (Pillow and numpy release the GIL for
most of it). A process pool would take the work out of the server process altogether, but
pays for sending the file and the preprocessed array back. What matters for the serving path
is what the *calling* process pays per image (its event loop and GIL), and the images/s; both
are measured here for each executor, on the same JPEGs, the images the server would get.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

from clip_grpc.model.images import decode_image
from clip_grpc.model.loading import load_model

from . import machine, models
from .inputs import photo_like_jpeg

NO_LIMIT = 1 << 40
_transform = None


def _start(folder: str) -> None:
    global _transform
    _transform = load_model(folder, "cpu", "fp32").image_transform


def preprocess(data: bytes):
    """Decode, EXIF, RGB, resize, crop, normalise: the float32 array the model thread needs."""
    return _transform(decode_image(data, NO_LIMIT, NO_LIMIT))


def measure(executor: Executor, images: list[bytes], seconds: float) -> dict:
    list(executor.map(preprocess, images[:8]))  # warm-up: workers started, caches filled
    done, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        for array in executor.map(preprocess, images):
            done += array.shape[0] > 0
    elapsed = time.perf_counter() - started
    return {"images_per_s": done / elapsed,
            "caller_cpu_us": 1e6 * (time.process_time() - cpu_started) / done}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.decode_pool", description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    folder, _ = models.resolve("near-free")
    _start(str(folder))
    print(f"{machine.one_line(machine.describe())}; load {machine.load_average()}")
    for width, height in ((224, 224), (640, 480)):
        images = [photo_like_jpeg(i, width, height) for i in range(32)]
        for round_index in range(args.rounds):
            for name, executor in (
                ("threads", ThreadPoolExecutor(args.workers)),
                ("processes", ProcessPoolExecutor(args.workers, initializer=_start,
                                                  initargs=(str(folder),))),
            ):
                with executor:
                    row = measure(executor, images, args.seconds)
                print(f"{width}x{height} round {round_index + 1} {name:9}: "
                      f"{row['images_per_s']:7.0f} images/s, caller CPU "
                      f"{row['caller_cpu_us']:6.0f} us/image", flush=True)
    print(f"load {machine.load_average()}")


if __name__ == "__main__":
    main()
