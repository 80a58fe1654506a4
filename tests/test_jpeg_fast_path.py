"""Plain colour JPEGs are decoded by simplejpeg (images._plain_jpeg): Pillow's pixels bit for
bit, and every other file still decoded, or refused, by Pillow as before."""

import io

import numpy as np
import pytest
import simplejpeg
from PIL import ExifTags, Image, ImageOps

from clip_grpc.errors import InvalidInput
from clip_grpc.model import images

LIMITS = dict(max_bytes=20 * 1024 * 1024, max_pixels=50_000_000)


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Gradients and noise: every DCT coefficient and chroma sample matters."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width, 1), y * 255 // max(height, 1),
                     (x + y) * 127 // max(width + height, 1)], axis=-1)
    noisy = base + rng.normal(0, 25, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def pillows_pixels(data: bytes) -> np.ndarray:
    """What decode_image gave before simplejpeg: Pillow's decode, EXIF applied, as RGB."""
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


@pytest.fixture
def simplejpeg_calls(monkeypatch):
    calls = []
    decode = simplejpeg.decode_jpeg

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return decode(*args, **kwargs)

    monkeypatch.setattr(images.simplejpeg, "decode_jpeg", counted)
    return calls


@pytest.mark.parametrize("size", [(1, 1), (17, 33), (224, 224), (641, 479)])
@pytest.mark.parametrize("options", [
    {"subsampling": 0}, {"subsampling": 1}, {"subsampling": 2}, {"progressive": True},
    {"quality": 95, "optimize": True}, {"quality": 5}, {"restart_marker_blocks": 3},
], ids=["444", "422", "420", "progressive", "q95-optimized", "q5", "restart-markers"])
def test_plain_colour_jpegs_get_pillows_pixels_bit_for_bit(size, options, simplejpeg_calls):
    data = jpeg(photo(*size, seed=size[0]), **options)
    decoded = np.asarray(images.decode_image(data, **LIMITS))
    assert len(simplejpeg_calls) == 1  # the fast path ran
    np.testing.assert_array_equal(decoded, pillows_pixels(data))


def _rotated() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    return jpeg(photo(40, 20), exif=exif)


@pytest.mark.parametrize(("make", "size"), [
    (lambda: jpeg(photo(30, 20).convert("L")), (30, 20)),  # grayscale
    (lambda: jpeg(photo(30, 20).convert("CMYK")), (30, 20)),
    (_rotated, (20, 40)),  # EXIF orientation 6: shown rotated
], ids=["grayscale", "cmyk", "exif-rotated"])
def test_other_jpegs_are_left_to_pillow(make, size, simplejpeg_calls):
    data = make()
    decoded = images.decode_image(data, **LIMITS)
    assert not simplejpeg_calls
    assert decoded.mode == "RGB" and decoded.size == size
    np.testing.assert_array_equal(np.asarray(decoded), pillows_pixels(data))


def test_draft_decoding_stays_with_pillow(simplejpeg_calls):
    data = jpeg(photo(640, 480))
    transform = images.ImageTransform.from_preprocessor_config({"size": {"shortest_edge": 64}})
    assert images.decode_image(data, **LIMITS, draft_size=transform.draft_size).size == (
        160, 120)  # libjpeg's 1/4 scale
    assert not simplejpeg_calls


def test_a_jpeg_libjpeg_only_warns_about_is_decided_by_pillow_as_before(simplejpeg_calls):
    good = jpeg(photo(64, 48))
    warned = good[:-2] + b"\x00" * 8 + good[-2:]  # stray bytes before the end marker
    with pytest.raises(ValueError, match="extraneous bytes"):
        simplejpeg.decode_jpeg(warned, colorspace="RGB", strict=True)
    simplejpeg_calls.clear()
    decoded = np.asarray(images.decode_image(warned, **LIMITS))
    assert len(simplejpeg_calls) == 1  # tried, refused, then Pillow
    np.testing.assert_array_equal(decoded, pillows_pixels(warned))


def test_a_truncated_jpeg_is_still_refused_as_corrupt():
    data = jpeg(photo(64, 48))
    with pytest.raises(InvalidInput, match="corrupt or truncated") as caught:
        images.decode_image(data[: len(data) // 2], **LIMITS)
    assert caught.value.field == "image"


def test_a_jpeg_whose_size_libjpeg_reads_otherwise_is_left_to_pillow(monkeypatch, simplejpeg_calls):
    """The pixel bound is checked on Pillow's reading of the header; simplejpeg decodes only
    when libjpeg reads the same size there."""
    data = jpeg(photo(64, 48))
    monkeypatch.setattr(images.simplejpeg, "decode_jpeg_header",
                        lambda data: (48_000, 64_000, "YCbCr", "420"))
    decoded = images.decode_image(data, **LIMITS)
    assert not simplejpeg_calls and decoded.size == (64, 48)
