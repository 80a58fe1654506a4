"""Deterministic benchmark inputs: photo-like JPEGs and short English sentences."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WORDS = (
    "a the photo of dog cat man woman child red blue green old small large wooden metal "
    "standing sitting running near under over beside bright dark street beach forest city "
    "table window car bicycle tree mountain river sky cloud sunset morning night painting "
    "close up view two three people holding looking at with on in and wearing hat coat"
).split()


def photo_like_jpeg(seed: int, width: int = 640, height: int = 480, quality: int = 90) -> bytes:
    """Smooth colour gradients, a few blurred shapes and sensor-like noise, as a JPEG.

    Flat synthetic images compress and decode unrealistically fast; this has the texture and
    file size (~60-100 KB) of an ordinary photo.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy = rng.uniform(0.002, 0.012, 2)
        phase = rng.uniform(0, 2 * np.pi)
        channels.append(127 + 90 * np.sin(fx * x + fy * y + phase))
    image = Image.fromarray(np.stack(channels, -1).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(20, width // 3), rng.integers(20, height // 3)
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=color)
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    noisy = np.asarray(image, np.float32) + rng.normal(0, 6, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def sentence(seed: int, min_words: int = 5, max_words: int = 20) -> str:
    rng = np.random.default_rng(10_000 + seed)
    count = int(rng.integers(min_words, max_words + 1))
    return " ".join(rng.choice(WORDS, count))


def make_inputs(count: int) -> tuple[list[bytes], list[str]]:
    """count distinct images and count distinct texts."""
    return [photo_like_jpeg(i) for i in range(count)], [sentence(i) for i in range(count)]
