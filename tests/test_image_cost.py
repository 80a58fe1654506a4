"""Hostile images: cost bounded before and after resizing, bombs named, only our formats opened."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessor

from clip_grpc.errors import InvalidInput
from clip_grpc.model.images import ImageTransform, decode_image
from clip_grpc.v1 import clip_pb2 as pb
from clip_grpc.v1 import clip_pb2_grpc
from tests.conftest import image_bytes

MIB = 1024 * 1024
LIMITS = dict(max_bytes=20 * MIB, max_pixels=50_000_000)
REPO = Path(__file__).resolve().parent.parent


def png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose header is rewritten to claim width x height pixels."""
    data = bytearray(image_bytes(size=(4, 4)))
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


@pytest.mark.parametrize("size", [(20000, 1), (40000, 1), (1, 20000), (5100, 100)])
def test_images_too_thin_to_crop_are_refused_saying_why(size):
    data = image_bytes(size=size, color=(0, 0, 0))
    assert len(data) < 2000
    with pytest.raises(InvalidInput) as caught:
        decode_image(data, **LIMITS)
    assert caught.value.field == "image"
    assert f"{size[0]}x{size[1]} pixels" in caught.value.message
    assert "aspect ratio" in caught.value.message and "50:1" in caught.value.message


def test_the_aspect_ratio_limit_is_a_setting():
    data = image_bytes(size=(400, 4))
    assert decode_image(data, **LIMITS, max_aspect_ratio=100).size == (400, 4)
    with pytest.raises(InvalidInput, match="the limit is 10:1"):
        decode_image(data, **LIMITS, max_aspect_ratio=10)


PEAK_SCRIPT = """
import json, resource, sys, time
from PIL import Image
from clip_grpc.errors import InvalidInput
from clip_grpc.model.images import ImageTransform, decode_image
from tests.conftest import image_bytes

transform = ImageTransform.from_preprocessor_config(json.load(open(sys.argv[1])))
hostile = [image_bytes(size=(w, 1), color=(0, 0, 0)) for w in (20000, 40000) for _ in range(5)]
thin_but_fine = image_bytes(size=(2000, 40))  # 50:1, the most the default accepts
before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cpu_before = time.process_time()
refused = 0
for data in [*hostile, thin_but_fine]:
    try:
        pixels = transform(decode_image(data, 20 << 20, 50_000_000))
    except InvalidInput:
        refused += 1
print(json.dumps({"refused": refused, "shape": list(pixels.shape),
                  "cpu_s": time.process_time() - cpu_before,
                  "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                    - before_kb) / 1024}))
"""


def test_peak_memory_and_cpu_of_hostile_pngs_stay_small(tmp_path):
    """Ten 20000x1 / 40000x1 PNGs cost GBs and seconds when they were resized for the demo
    model (64 px: 1,280,000x64 before the crop); now they are refused before decoding."""
    config = REPO / "clip_grpc" / "demo_model" / "preprocessor_config.json"
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(config)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["refused"] == 10 and seen["shape"] == [3, 64, 64]
    assert seen["rss_growth_mb"] < 100, seen  # was over 1000 for one 20000x1 PNG
    assert seen["cpu_s"] < 2.0, seen  # was about 4 CPU-s for one


@pytest.mark.parametrize("size", [(100000, 1000), (30000, 30000), (8000, 8000)])
def test_a_decompression_bomb_gets_its_own_message(size):
    bomb = png_claiming(*size)
    assert len(bomb) < 200
    with pytest.raises(InvalidInput) as caught:
        decode_image(bomb, **LIMITS)
    message = caught.value.message
    assert "decompression" in message and "not a readable" not in message, message
    assert caught.value.field == "image"


def test_a_png_text_chunk_bomb_is_named():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * (PngImagePlugin.MAX_TEXT_CHUNK + 1), zip=True)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    assert len(buffer.getvalue()) < 100_000
    with pytest.raises(InvalidInput, match="decompression bomb"):
        decode_image(buffer.getvalue(), **LIMITS)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n%%EOF\n"


def other_format(fmt: str) -> bytes:
    if fmt == "EPS":
        return EPS
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 10)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["EPS", "PCX", "TGA", "ICO", "PPM", "SGI"])
def test_only_the_documented_formats_are_opened(fmt):
    data = other_format(fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow alone would open it
    with pytest.raises(InvalidInput, match="not a readable PNG, JPEG, WebP, GIF, BMP or TIFF"):
        decode_image(data, **LIMITS)


@pytest.mark.parametrize(
    "size", [(640, 480), (10, 480), (480, 10), (1, 1), (3, 100), (225, 224), (2000, 1500)]
)
def test_cropping_before_float_keeps_processor_parity(size):
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
    processor = CLIPImageProcessor()
    expected = processor(images=image, return_tensors="np").pixel_values[0]
    actual = ImageTransform.from_preprocessor_config(processor.to_dict())(image)
    assert actual.shape == expected.shape == (3, 224, 224)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


async def test_a_thin_image_fails_alone_in_its_request(clip_server):
    async with grpc.aio.insecure_channel(clip_server.target) as channel:
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        response = await stub.Embed(pb.EmbedRequest(items=[
            pb.Item(id="thin", image=image_bytes(size=(20000, 1))),
            pb.Item(id="fine", image=image_bytes()),
        ]))  # fmt: skip
    thin, fine = response.results
    assert thin.error.code == 3 and thin.error.field == "image"
    assert "aspect ratio" in thin.error.message
    assert fine.embedding.dim == 16
