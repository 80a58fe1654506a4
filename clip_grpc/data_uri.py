"""`data:` URIs (RFC 2397) -> bytes. The only kind of URI the server and the bridge read: they
never fetch URLs and never open paths. Imports nothing heavy (the bridge uses it too)."""

from __future__ import annotations

import base64
import binascii
import urllib.parse

URL_SCHEMES = ("http://", "https://")


class DataUriError(ValueError):
    """The string is not a usable data: URI; the message says why, for the caller."""


def is_data_uri(value: str) -> bool:
    return value[:5].lower() == "data:"


def decode_data_uri(uri: str) -> bytes:
    """The bytes a `data:[<mediatype>][;base64],<data>` URI carries. The media type is not
    trusted: the server reads the bytes themselves to know the image format."""
    if not is_data_uri(uri):
        raise DataUriError(not_a_data_uri(uri))
    header, comma, payload = uri[5:].partition(",")
    if not comma:
        raise DataUriError("malformed data: URI: no ',' between the media type and the data")
    if header.lower().endswith(";base64"):
        try:
            # Standard or URL-safe alphabet; whitespace (line-wrapped base64) is ignored.
            compact = "".join(urllib.parse.unquote(payload).split()).rstrip("=")
            compact = compact.replace("-", "+").replace("_", "/")
            return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        except (binascii.Error, ValueError) as error:
            raise DataUriError(f"the data: URI's base64 payload is invalid ({error})") from None
    return urllib.parse.unquote_to_bytes(payload)


def not_a_data_uri(value: str) -> str:
    """Why a URI or path that is not `data:` is refused."""
    shown = value if len(value) <= 80 else value[:77] + "..."
    if value.lower().startswith(URL_SCHEMES):
        return (f"{shown!r} is a URL: the server does not fetch URLs; send the image itself "
                "(its bytes, or a data: URI)")
    return (f"{shown!r} is not a data: URI: the server does not fetch URLs or open paths; send "
            "the image itself (its bytes, or a data: URI)")
