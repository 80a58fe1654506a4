"""--jpeg-decode draft: big JPEGs decoded at a reduced scale, never below the model's input."""

import io

import numpy as np
import pytest
from PIL import Image

from clip_grpc.engine import Input, l2_normalize
from clip_grpc.model.encoder import Encoder
from clip_grpc.model.images import ImageTransform, decode_image
from tests.conftest import server_config, started_engine
from tests.model_factory import CLIP_MEAN, CLIP_STD

LIMITS = dict(max_bytes=1 << 30, max_pixels=1 << 30)
CLIP_224 = ImageTransform.from_preprocessor_config({
    "size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
})
SIGLIP_256 = ImageTransform.from_preprocessor_config({"size": {"height": 256, "width": 256}})


def photo(width: int, height: int, fmt: str = "JPEG") -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 / width, y * 255 / height, (x + y) % 256], -1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, fmt, quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("transform, size, expected", [
    (CLIP_224, (640, 480), (299, 224)),
    (CLIP_224, (480, 640), (224, 299)),
    (CLIP_224, (224, 300), None),  # already at the input size: decode in full
    (CLIP_224, (100, 100), None),
    (SIGLIP_256, (1024, 768), (342, 256)),
])
def test_draft_size_never_goes_below_the_input(transform, size, expected):
    assert transform.draft_size(*size) == expected


@pytest.mark.parametrize("size, decoded", [((640, 480), (320, 240)), ((1600, 1200), (400, 300)),
                                           ((480, 640), (240, 320))])
def test_big_jpegs_decode_at_a_reduced_scale(size, decoded):
    image = decode_image(photo(*size), **LIMITS, draft_size=CLIP_224.draft_size)
    assert image.mode == "RGB" and image.size == decoded
    assert min(image.size) >= 224


def test_draft_pixels_stay_close_to_a_full_decode():
    data = photo(1600, 1200)
    full = CLIP_224(decode_image(data, **LIMITS))
    draft = CLIP_224(decode_image(data, **LIMITS, draft_size=CLIP_224.draft_size))
    assert full.shape == draft.shape == (3, 224, 224)
    difference = np.abs(full - draft)
    assert 0 < difference.mean() < 0.05  # differs, but by about a grey level on average


def test_draft_leaves_other_formats_and_the_default_alone():
    png = decode_image(photo(640, 480, "PNG"), **LIMITS, draft_size=CLIP_224.draft_size)
    assert png.size == (640, 480)
    assert decode_image(photo(640, 480), **LIMITS).size == (640, 480)


async def test_the_engine_decodes_in_draft_mode_only_when_asked(tiny_clip_dir, tiny_clip):
    data = photo(640, 480)
    vectors = {}
    for mode in ("full", "draft"):
        config = server_config(tiny_clip_dir, jpeg_decode=mode)
        async with started_engine(tiny_clip, config) as engine:
            vectors[mode] = (await engine.embed([Input("photo", image=data)]))[0]
    reference = tiny_clip.image_transform(decode_image(data, **LIMITS))
    np.testing.assert_allclose(vectors["full"], l2_normalize(
        Encoder(tiny_clip).embed_images([reference])[0]), atol=1e-5)
    assert not np.array_equal(vectors["full"], vectors["draft"])
    assert float(vectors["full"] @ vectors["draft"]) > 0.99
