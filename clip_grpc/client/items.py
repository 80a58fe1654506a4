"""What the client accepts as an item, and how each one becomes a `clip_pb2.Item`.

The rule, first match wins:

1. `Text(...)` is always a text and `Image(...)` always an image.
2. `bytes`, `bytearray`, `memoryview`, `pathlib.Path` (any `os.PathLike`) and PIL images are
   images (bytes are the encoded file: PNG, JPEG, ...).
3. A `str` naming an existing file is an image read from that path; any other `str` is a text.
4. A `clip_pb2.Item` is sent as it is.

Wrap a text that happens to be a file name in `Text(...)`, and an image path that may not exist
yet in `Image(...)`, to remove any doubt. An image file that cannot be read becomes a per-item
error (code NOT_FOUND or INVALID_ARGUMENT) and is never sent.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import grpc
from PIL import Image as PILImage

from clip_grpc.client.errors import ItemFailure
from clip_grpc.v1 import clip_pb2

# Modes PIL can write as PNG without conversion.
_PNG_MODES = {"1", "L", "LA", "I", "P", "RGB", "RGBA"}


@dataclass(frozen=True)
class Text:
    """An item that is a text, whatever it looks like."""

    text: str
    id: str | None = None


@dataclass(frozen=True)
class Image:
    """An item that is an image: encoded bytes, a file path or a PIL image."""

    source: Any
    id: str | None = None


def to_item(obj: Any, index: int) -> clip_pb2.Item | ItemFailure:
    """Turn one input into an Item (its id defaults to str(index)), or into an ItemFailure when
    its image file cannot be read. Raises TypeError for inputs that fit no rule."""
    if isinstance(obj, clip_pb2.Item):
        return obj
    if isinstance(obj, Text):
        return clip_pb2.Item(id=_id(obj.id, index), text=obj.text)
    if isinstance(obj, Image):
        return _image_item(obj.source, _id(obj.id, index), index)
    if isinstance(obj, str) and not os.path.isfile(obj):
        return clip_pb2.Item(id=str(index), text=obj)
    if isinstance(obj, str | bytes | bytearray | memoryview | os.PathLike) or _is_pil_image(obj):
        return _image_item(obj, str(index), index)
    raise TypeError(
        f"cannot embed item {index} of type {type(obj).__name__}: expected a text, image bytes, "
        "a file path, a PIL image, Text(...) or Image(...)"
    )


def _image_item(source: Any, item_id: str, index: int) -> clip_pb2.Item | ItemFailure:
    try:
        return clip_pb2.Item(id=item_id, image=image_bytes(source))
    except FileNotFoundError as error:
        return ItemFailure(index, item_id, grpc.StatusCode.NOT_FOUND, str(error), "image")
    except OSError as error:
        return ItemFailure(index, item_id, grpc.StatusCode.INVALID_ARGUMENT, str(error), "image")


def image_bytes(source: Any) -> bytes:
    """The encoded bytes of an image given as bytes, a path or a PIL image."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as file:
            return file.read()
    if _is_pil_image(source):
        image = source if source.mode in _PNG_MODES else source.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    raise TypeError(
        f"cannot use {type(source).__name__} as an image: expected bytes, a path or a PIL image"
    )


def _is_pil_image(obj: Any) -> bool:
    return isinstance(obj, PILImage.Image)


def _id(given: str | None, index: int) -> str:
    return str(index) if given is None else str(given)
