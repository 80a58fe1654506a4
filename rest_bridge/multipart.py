"""Seed 002's form (fields `image-<id>` and `text-<id>`) -> one gRPC EmbedRequest.

Tornado's multipart parser does the parsing; this module only checks what the form means.
"""

from __future__ import annotations

import dataclasses
import re

from tornado.httputil import (
    HTTPFile,
    HTTPInputError,
    ParseBodyConfig,
    ParseMultipartConfig,
    parse_body_arguments,
)

from clip_grpc.v1 import clip_pb2
from rest_bridge.status_map import ApiError, invalid_argument

IMAGE, TEXT = "image", "text"
ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
FIELD_PATTERN = re.compile(r"(image|text)-(.*)", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class FormItem:
    """One form field: `field` is its name (e.g. "image-3"), `form_id` the part after the dash."""

    field: str
    kind: str
    form_id: str
    text: str | None = None
    image: bytes | None = None


def parse_form(
    content_type: str, body: bytes, max_fields: int
) -> list[FormItem]:
    """Returns the form's items, images first then texts, each in the order sent."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "send multipart/form-data with fields image-<id> (files) and text-<id> (texts); "
            f"got Content-Type {content_type or 'none'!r}",
        )
    arguments: dict[str, list[bytes]] = {}
    files: dict[str, list[HTTPFile]] = {}
    # +1: the split the parser does counts the (empty) preamble as a part.
    config = ParseBodyConfig(multipart=ParseMultipartConfig(max_parts=max_fields + 1))
    try:
        parse_body_arguments(content_type, body, arguments, files, config=config)
    except HTTPInputError as error:
        if "too many parts" in str(error):
            raise invalid_argument(f"the form has more than {max_fields} fields") from error
        raise invalid_argument(f"malformed multipart body: {error}") from error

    if not arguments and not files:
        raise invalid_argument("the form has no fields; send image-<id> and/or text-<id>")
    items = [_image_item(name, uploads) for name, uploads in files.items()]
    items += [_text_item(name, values) for name, values in arguments.items()]
    return items


def _split_field(name: str) -> tuple[str, str]:
    match = FIELD_PATTERN.fullmatch(name)
    if match is None:
        raise invalid_argument(
            f"unknown form field {name!r}: field names are image-<id> or text-<id>", name
        )
    kind, form_id = match.groups()
    if ID_PATTERN.fullmatch(form_id) is None:
        raise invalid_argument(
            f"bad id {form_id!r} in field {name!r}: ids are 1-64 letters, digits, '_', '.', '-'",
            name,
        )
    return kind, form_id


def _single(name: str, values: list) -> None:
    if len(values) > 1:
        raise invalid_argument(f"field {name!r} is sent {len(values)} times; send it once", name)


def _image_item(name: str, uploads: list[HTTPFile]) -> FormItem:
    kind, form_id = _split_field(name)
    if kind == TEXT:
        raise invalid_argument(
            f"field {name!r} is a file upload; texts are sent as plain form values", name
        )
    _single(name, uploads)
    return FormItem(field=name, kind=IMAGE, form_id=form_id, image=uploads[0].body)


def _text_item(name: str, values: list[bytes]) -> FormItem:
    kind, form_id = _split_field(name)
    if kind == IMAGE:
        raise invalid_argument(
            f"field {name!r} must be a file upload (with a filename), not a plain value", name
        )
    _single(name, values)
    try:
        text = values[0].decode("utf-8")
    except UnicodeDecodeError as error:
        raise invalid_argument(f"field {name!r} is not valid UTF-8", name) from error
    return FormItem(field=name, kind=TEXT, form_id=form_id, text=text)


def build_embed_request(items: list[FormItem], truncate: bool) -> clip_pb2.EmbedRequest:
    """One request for the whole form; each item's gRPC id is its form field name. Packed
    float32 is the format numpy reads fastest."""
    request = clip_pb2.EmbedRequest(
        options=clip_pb2.EmbedOptions(
            truncate=truncate, format=clip_pb2.EMBEDDING_FORMAT_PACKED_FLOAT32
        )
    )
    for item in items:
        if item.kind == IMAGE:
            request.items.add(id=item.field, image=item.image)
        else:
            request.items.add(id=item.field, text=item.text)
    return request
