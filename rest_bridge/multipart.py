"""Seed 002's form (fields `image-<id>` and `text-<id>`) -> one gRPC EmbedRequest.

The form is split in place: each field's value is a memoryview into the one body buffer, so
that the body is held once until the gRPC request is built from it (Tornado's parser copies
every part, and the copies outlive the body).
"""

from __future__ import annotations

import dataclasses
import re
from email.message import Message

from tornado.httputil import HTTPHeaders

from clip_grpc.v1 import clip_pb2
from rest_bridge.status_map import ApiError, invalid_argument

IMAGE, TEXT = "image", "text"
ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
FIELD_PATTERN = re.compile(r"(image|text)-(.*)", re.DOTALL)
# Headers of one part: Content-Disposition and perhaps Content-Type; far less than this.
MAX_PART_HEADER_BYTES = 16 * 1024


@dataclasses.dataclass(frozen=True)
class FormItem:
    """One form field: `field` is its name (e.g. "image-3"), `form_id` the part after the dash.
    `image` is a view into the request body, until `forget_images` lets go of it."""

    field: str
    kind: str
    form_id: str
    text: str | None = None
    image: memoryview | bytes | None = None


def parse_form(
    content_type: str, body: bytes | bytearray, max_fields: int
) -> list[FormItem]:
    """Returns the form's items, images first then texts, each in the order sent."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "send multipart/form-data with fields image-<id> (files) and text-<id> (texts); "
            f"got Content-Type {content_type or 'none'!r}",
        )
    arguments: dict[str, list[memoryview]] = {}
    files: dict[str, list[memoryview]] = {}
    for name, filename, value in _split_parts(_boundary(content_type), body, max_fields):
        (files if filename else arguments).setdefault(name, []).append(value)

    if not arguments and not files:
        raise invalid_argument("the form has no fields; send image-<id> and/or text-<id>")
    items = [_image_item(name, uploads) for name, uploads in files.items()]
    items += [_text_item(name, values) for name, values in arguments.items()]
    return items


def forget_images(items: list[FormItem]) -> list[FormItem]:
    """The items without their image bytes (once those are in the gRPC request)."""
    return [dataclasses.replace(item, image=None) for item in items]


def _malformed(why: str) -> ApiError:
    return invalid_argument(f"malformed multipart body: {why}")


def _disposition(header: str) -> tuple[str, dict[str, str]]:
    message = Message()
    message["Content-Disposition"] = header
    pairs = message.get_params([], header="content-disposition")
    params = {key.lower(): value for key, value in pairs}
    return message.get_content_disposition() or "", params


def _boundary(content_type: str) -> bytes:
    message = Message()
    message["Content-Type"] = content_type
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise _malformed("the Content-Type names no boundary")
    return boundary.encode("latin-1")


def _split_parts(boundary: bytes, body: bytes | bytearray, max_fields: int):
    """Yields (name, filename or None, value view) for each part (the preamble is ignored)."""
    view = memoryview(body)
    delimiter = b"--" + boundary + b"\r\n"
    end = body.rfind(b"--" + boundary + b"--")
    if end == -1:
        raise _malformed("no final boundary")
    position = body.find(delimiter, 0, end)
    count = 0
    while position != -1:
        start = position + len(delimiter)
        position = body.find(delimiter, start, end)
        stop = end if position == -1 else position
        count += 1
        if count > max_fields:
            raise invalid_argument(f"the form has more than {max_fields} fields")
        yield _part(body, view, start, stop)


def _part(body, view: memoryview, start: int, stop: int):
    head_end = body.find(b"\r\n\r\n", start, min(stop, start + MAX_PART_HEADER_BYTES))
    if head_end == -1 or body[stop - 2:stop] != b"\r\n":
        raise _malformed("a part without headers or not ended by CRLF")
    try:
        headers = HTTPHeaders.parse(bytes(body[start:head_end]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise _malformed(f"bad part headers ({error})") from error
    disposition, params = _disposition(headers.get("Content-Disposition", ""))
    if disposition != "form-data":
        raise _malformed("a part without Content-Disposition: form-data")
    if not params.get("name"):
        raise _malformed("a part without a name")
    return params["name"], params.get("filename") or None, view[head_end + 4:stop - 2]


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


def _image_item(name: str, uploads: list[memoryview]) -> FormItem:
    kind, form_id = _split_field(name)
    if kind == TEXT:
        raise invalid_argument(
            f"field {name!r} is a file upload; texts are sent as plain form values", name
        )
    _single(name, uploads)
    return FormItem(field=name, kind=IMAGE, form_id=form_id, image=uploads[0])


def _text_item(name: str, values: list[memoryview]) -> FormItem:
    kind, form_id = _split_field(name)
    if kind == IMAGE:
        raise invalid_argument(
            f"field {name!r} must be a file upload (with a filename), not a plain value", name
        )
    _single(name, values)
    try:
        text = str(values[0], "utf-8")
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
            request.items.add(id=item.field, image=bytes(item.image))
        else:
            request.items.add(id=item.field, text=item.text)
    return request
