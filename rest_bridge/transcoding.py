"""Proto3 JSON <-> gRPC messages for the /v1 endpoints (protobuf's json_format does the work)."""

from __future__ import annotations

import base64
import json

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from clip_grpc.data_uri import (
    URL_SCHEMES,
    DataUriError,
    decode_data_uri,
    is_data_uri,
    not_a_data_uri,
)
from rest_bridge.status_map import ApiError, invalid_argument

JSON_CONTENT_TYPES = ("application/json",)


def parse_json_request(
    content_type: str, body: bytes | bytearray, message: Message
) -> Message:
    """Fills `message` from the proto3 JSON mapping (lowerCamelCase or proto field names,
    bytes as base64); unknown fields are rejected. A bytearray body is consumed: emptied once
    decoded, so that body, text and parsed JSON are never all held at once."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type and media_type not in JSON_CONTENT_TYPES:
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"send the request as JSON (Content-Type: application/json), got {media_type!r}",
        )
    name = message.DESCRIPTOR.name
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise invalid_argument(f"not a valid {name}: {error}") from error
    if isinstance(body, bytearray):
        body.clear()
    if not text or text.isspace():
        raise invalid_argument(f"empty body: send a {name} as JSON")
    try:
        document = json.loads(text)
        del text
        inline_data_uris(document, message.DESCRIPTOR)
        json_format.ParseDict(document, message)
    except (json_format.ParseError, ValueError) as error:  # JSON and UTF-8 errors are ValueErrors
        raise invalid_argument(f"not a valid {name}: {error}") from error
    return message


def inline_data_uris(value, descriptor: Descriptor, path: str = "") -> None:
    """Images may come as data: URIs wherever a bytes field (base64 in proto3 JSON) is: they are
    replaced by their payload, in base64, before parsing. Walks the JSON along the message."""
    if not isinstance(value, dict):
        return
    for key, entry in value.items():
        field = descriptor.fields_by_camelcase_name.get(key) or descriptor.fields_by_name.get(key)
        if field is None:
            continue  # json_format names the unknown field
        where = f"{path}.{key}" if path else key
        entries = entry if field.is_repeated and isinstance(entry, list) else None
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for index, element in enumerate(entries if entries is not None else [entry]):
                at = f"{where}[{index}]" if entries is not None else where
                inline_data_uris(element, field.message_type, at)
        elif field.type == FieldDescriptor.TYPE_BYTES and isinstance(entry, str):
            if entry.lower().startswith(URL_SCHEMES):
                raise invalid_argument(f"{where}: {not_a_data_uri(entry)}", where)
            if not is_data_uri(entry):
                continue  # base64, as proto3 JSON has it
            try:
                value[key] = base64.b64encode(decode_data_uri(entry)).decode("ascii")
            except DataUriError as error:
                raise invalid_argument(f"{where}: {error}", where) from None


def to_json_dict(message: Message) -> dict:
    """The proto3 JSON mapping, with zero values printed (a rank at index 0 still says so)."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def parse_any_json(body: bytes):
    """The body as JSON whatever its Content-Type, as the peers' servers read it (BentoML does
    not check it; jina's clients always send JSON)."""
    try:
        return json.loads(body)
    except ValueError as error:
        raise invalid_argument(f"the body is not valid JSON: {error}") from None
