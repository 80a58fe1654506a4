"""Image decoding and the pixel transform."""

import io

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessor

from clip_grpc.errors import InvalidInput
from clip_grpc.model.images import ImageTransform, decode_image
from tests.conftest import image_bytes

MIB = 1024 * 1024
LIMITS = dict(max_bytes=20 * MIB, max_pixels=50_000_000)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_supported_format_decodes_to_rgb(fmt):
    image = decode_image(image_bytes(fmt=fmt, size=(37, 21)), **LIMITS)
    assert image.mode == "RGB" and image.size == (37, 21)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK", "I;16"])
def test_other_modes_become_rgb(mode):
    color = {"L": 128, "LA": (128, 255), "RGBA": (10, 20, 30, 255), "P": 5,
             "CMYK": (0, 0, 0, 0), "I;16": 30000}[mode]
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    image = decode_image(image_bytes(color=color, mode=mode, fmt=fmt), **LIMITS)
    assert image.mode == "RGB"


def test_transparent_pixels_are_composited_on_white():
    image = decode_image(image_bytes(color=(255, 0, 0, 0), mode="RGBA"), **LIMITS)
    assert image.getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (40, 20), (0, 128, 0)).save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue(), **LIMITS).size == (20, 40)


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (b"not an image at all", "not a readable"),
        (image_bytes(fmt="PNG", size=(64, 64))[:60], "corrupt"),
        (image_bytes(fmt="JPEG", size=(64, 64))[:200], "corrupt"),
    ],
)
def test_bad_bytes_are_invalid_input(data, words):
    with pytest.raises(InvalidInput) as caught:
        decode_image(data, **LIMITS)
    assert words in caught.value.message and caught.value.field == "image"


def test_byte_limit():
    with pytest.raises(InvalidInput, match="bytes; the limit is 100"):
        decode_image(image_bytes(size=(64, 64)), max_bytes=100, max_pixels=10**9)


def test_pixel_limit_guards_against_decompression_bombs():
    bomb = image_bytes(size=(4000, 4000), color=(0, 0, 0))  # tiny file, 16M pixels
    assert len(bomb) < 100_000
    with pytest.raises(InvalidInput, match="4000x4000 pixels"):
        decode_image(bomb, max_bytes=MIB, max_pixels=1_000_000)


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (224, 224), (100, 300), (50, 20)])
def test_transform_matches_the_transformers_processor(size):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
    processor = CLIPImageProcessor()
    expected = processor(images=image, return_tensors="np").pixel_values[0]
    transform = ImageTransform.from_preprocessor_config(processor.to_dict())
    actual = transform(image)
    assert actual.shape == expected.shape == (3, 224, 224)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


@pytest.mark.parametrize("size", [(300, 250), (224, 224), (20, 30)])  # the last one is padded
@pytest.mark.parametrize("config", [
    {},  # OpenAI CLIP's mean and std, 224 px crop
    {"size": {"height": 64, "width": 64}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3},
    {"do_rescale": False, "do_normalize": False, "crop_size": 40, "do_center_crop": True,
     "size": {"shortest_edge": 32}},
])
def test_normalising_in_place_is_bit_identical_to_the_float32_expression(size, config):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
    transform = ImageTransform.from_preprocessor_config(
        {"crop_size": 224, "do_center_crop": True, **config})
    actual = transform(image)
    # The reference: the whole (3, H, W) image as float32, then the expression in one go.
    every_level = np.arange(256, dtype=np.uint8).reshape(1, 1, 256).repeat(3, axis=0)
    expected_levels = (every_level.astype(np.float32) * transform.rescale_factor
                       - transform.mean) / transform.std
    assert np.array_equal(transform.normalise(every_level).view(np.uint32),
                          expected_levels.view(np.uint32))
    assert actual.dtype == np.float32 and actual.shape == (3, *transform.output_hw)
    assert actual.flags.c_contiguous  # PIL's (H, W, 3) order, walked strided, is 4x slower
    levels = np.unique(actual[0])
    assert levels.size > 1  # not all padding
