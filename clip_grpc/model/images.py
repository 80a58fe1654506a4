"""Image bytes -> normalised pixel arrays, the way the model's preprocessor_config.json says.

This mirrors transformers' PIL image processor (resize with PIL on uint8, int() for the long
edge, centre crop at int((size - crop) / 2)), so pixels equal the processor's; a parity test
holds it to that.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..errors import InvalidInput

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The documented formats, and the only Pillow plugins ever tried: no EPS (Ghostscript), no others.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
DEFAULT_MAX_ASPECT_RATIO = 50.0


@dataclass(frozen=True)
class ImageTransform:
    shortest_edge: int | None  # resize the short side to this, keeping the aspect ratio
    resize_hw: tuple[int, int] | None  # or resize to exactly (height, width)
    crop_hw: tuple[int, int] | None
    resample: int
    rescale_factor: float
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_preprocessor_config(cls, cfg: dict) -> ImageTransform:
        size = cfg.get("size", {"shortest_edge": 224})
        if isinstance(size, int):
            size = {"shortest_edge": size}
        shortest = size.get("shortest_edge") if cfg.get("do_resize", True) else None
        resize_hw = (
            (size["height"], size["width"])
            if cfg.get("do_resize", True) and "height" in size
            else None
        )
        crop = cfg.get("crop_size")
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        crop_hw = (crop["height"], crop["width"]) if crop and cfg.get("do_center_crop") else None
        scale = cfg.get("rescale_factor", 1 / 255) if cfg.get("do_rescale", True) else 1.0
        if cfg.get("do_normalize", True):
            mean = cfg.get("image_mean", OPENAI_CLIP_MEAN)
            std = cfg.get("image_std", OPENAI_CLIP_STD)
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        return cls(
            shortest_edge=shortest,
            resize_hw=resize_hw,
            crop_hw=crop_hw,
            resample=int(cfg.get("resample", Image.Resampling.BICUBIC)),
            rescale_factor=float(scale),
            mean=np.asarray(mean, dtype=np.float32).reshape(3, 1, 1),
            std=np.asarray(std, dtype=np.float32).reshape(3, 1, 1),
        )

    @property
    def output_hw(self) -> tuple[int, int]:
        if self.crop_hw:
            return self.crop_hw
        if self.resize_hw:
            return self.resize_hw
        return (self.shortest_edge, self.shortest_edge)

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step."""
        if self.resize_hw:
            return self.resize_hw[1], self.resize_hw[0]
        if self.shortest_edge is None:
            return width, height
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.shortest_edge * long / short)
        if width <= height:
            return self.shortest_edge, new_long
        return new_long, self.shortest_edge

    def draft_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The smallest size a JPEG may be decoded at (libjpeg scales by 1/2, 1/4 or 1/8) with
        the resize step still shrinking it; None when it must be decoded in full."""
        if self.shortest_edge is not None:
            needed = self.shortest_edge
        elif self.resize_hw is not None:
            needed = max(self.resize_hw)  # either orientation, whatever EXIF says
        else:
            return None
        scale = needed / min(width, height)
        if scale >= 1:
            return None
        return math.ceil(width * scale), math.ceil(height * scale)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """An RGB PIL image -> float32 (3, H, W), normalised.

        The crop (and any padding) is taken on the uint8 image, so only the output becomes
        float32; the resize costs the resized size, which decode_image's aspect-ratio bound
        keeps near the output's.
        """
        return self.normalise(self._cropped(image))

    def uint8(self, image: Image.Image) -> np.ndarray:
        """An RGB PIL image -> uint8 (3, H, W), laid out so in memory: resized and cropped as
        __call__ does, for an encoder that normalises on its own device (Encoder.takes_uint8)."""
        return np.ascontiguousarray(self._cropped(image))

    def _cropped(self, image: Image.Image) -> np.ndarray:
        """Resized and cropped: uint8 (3, H, W), a view of PIL's (H, W, 3)."""
        new_size = self.target_size(*image.size)
        if new_size != image.size:
            image = image.resize(new_size, resample=self.resample)
        if self.crop_hw and self.crop_hw[0] <= image.height and self.crop_hw[1] <= image.width:
            crop_h, crop_w = self.crop_hw
            top, left = int((image.height - crop_h) / 2.0), int((image.width - crop_w) / 2.0)
            image = image.crop((left, top, left + crop_w, top + crop_h))
        pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
        if self.crop_hw:
            pixels = _center_crop(pixels, *self.crop_hw)  # pads what is smaller than the crop
        return pixels

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (3, H, W) -> float32 (pixel * rescale_factor - mean) / std: the same float32
        operations as that expression, bit for bit, done in place on one new array instead of
        allocating one per operation (half the CPU of the expression for a 224x224 image).

        The new array is laid out (3, H, W) in memory even when pixels is a transposed view
        of PIL's (H, W, 3): astype would otherwise keep that layout, and the operations, the
        model thread's copy into the batch and the model would all walk it strided (4-5x the
        CPU here, and 1.6x for the copy)."""
        out = pixels.astype(np.float32, order="C")
        out *= self.rescale_factor
        out -= self.mean
        out /= self.std
        return out


def _center_crop(pixels: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    _, h, w = pixels.shape
    if crop_h > h or crop_w > w:  # pad with zeros first, as the processor does
        top, left = max(crop_h - h, 0) // 2, max(crop_w - w, 0) // 2
        padded = np.zeros((3, max(h, crop_h), max(w, crop_w)), dtype=pixels.dtype)
        padded[:, top : top + h, left : left + w] = pixels
        pixels, (_, h, w) = padded, padded.shape
    top, left = int((h - crop_h) / 2.0), int((w - crop_w) / 2.0)
    return pixels[:, top : top + crop_h, left : left + crop_w]


DraftSize = Callable[[int, int], tuple[int, int] | None]


def decode_image(
    data: bytes,
    max_bytes: int,
    max_pixels: int,
    draft_size: DraftSize | None = None,
    *,
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
) -> Image.Image:
    """Image file bytes -> an RGB image, EXIF orientation applied; InvalidInput when it can't.

    The size in the file's header is checked before any pixel is decoded: at most max_pixels,
    and no thinner than max_aspect_ratio (a 20000x1 PNG of 140 bytes would resize to
    1,280,000x64 for a 64-pixel model; a centre crop of it keeps nothing meaningful).
    With draft_size, a JPEG is decoded at the reduced size it gives (Pillow's draft mode):
    faster, but the pixels differ a little from a full decode then resize.
    """
    if not data:
        raise InvalidInput("image is empty", "image")
    if len(data) > max_bytes:
        raise InvalidInput(
            f"image is {len(data)} bytes; the limit is {max_bytes}", "image"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            _check_size(*image.size, max_pixels, max_aspect_ratio)
            if draft_size is None:
                if (decoded := _plain_jpeg(image, data)) is not None:
                    return decoded
            elif image.format == "JPEG" and (reduced := draft_size(*image.size)) is not None:
                image.draft("RGB", reduced)
            image.load()  # GIF/TIFF: the first frame
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except InvalidInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InvalidInput(f"image refused as a decompression bomb: {error}", "image") from None
    except UnidentifiedImageError:
        raise InvalidInput(
            "image is not a readable PNG, JPEG, WebP, GIF, BMP or TIFF", "image"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        if "decompressed data too large" in str(error).lower():  # a PNG text or ICC chunk bomb
            raise InvalidInput(
                f"image refused as a decompression bomb: {error}", "image"
            ) from None
        raise InvalidInput(f"image is corrupt or truncated ({error})", "image") from None


def _plain_jpeg(image: Image.Image, data: bytes) -> Image.Image | None:
    """A colour JPEG with no EXIF rotation, decoded by simplejpeg: libjpeg-turbo's decode, as
    Pillow's is, so the same pixels bit for bit (the tests compare them), in about half the CPU
    (Pillow feeds its decoder in chunks and copies the result out). None where Pillow decides
    as it always did: other formats and colour spaces, rotated images, and any file libjpeg
    only warns about (strict mode refuses it here; Pillow may accept it, as before)."""
    if image.format != "JPEG" or image.mode != "RGB":
        return None
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        return None
    try:
        # The pixel bounds were checked on Pillow's reading of the header: decode only what
        # libjpeg reads there too, so no file can pass one parser's check and the other's decode.
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        if (width, height) != image.size:
            return None
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError:
        return None
    return Image.fromarray(pixels)


def _check_size(width: int, height: int, max_pixels: int, max_aspect_ratio: float) -> None:
    if width < 1 or height < 1:
        raise InvalidInput(f"image is {width}x{height} pixels, which is empty", "image")
    if width * height > max_pixels:
        raise InvalidInput(
            f"image is {width}x{height} pixels; the limit is {max_pixels} pixels "
            "(a decompression-bomb guard)",
            "image",
        )
    ratio = max(width, height) / min(width, height)
    if ratio > max_aspect_ratio:
        raise InvalidInput(
            f"image is {width}x{height} pixels, an aspect ratio of {ratio:.0f}:1; the limit is "
            f"{max_aspect_ratio:g}:1 (too thin to resize and centre-crop sensibly)",
            "image",
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Palette, grayscale, CMYK and 16-bit images -> RGB; transparency composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I"):  # 16/32-bit grayscale: keep the top 8 bits of 16
        levels = np.asarray(image, dtype=np.float64) / 256.0
        image = Image.fromarray(np.clip(levels, 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")
