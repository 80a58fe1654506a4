"""Proto3 JSON <-> gRPC messages for the /v1 endpoints (protobuf's json_format does the work)."""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.message import Message

from rest_bridge.status_map import ApiError, invalid_argument

JSON_CONTENT_TYPES = ("application/json",)


def parse_json_request(content_type: str, body: bytes, message: Message) -> Message:
    """Fills `message` from the proto3 JSON mapping (lowerCamelCase or proto field names,
    bytes as base64); unknown fields are rejected."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type and media_type not in JSON_CONTENT_TYPES:
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"send the request as JSON (Content-Type: application/json), got {media_type!r}",
        )
    if not body.strip():
        raise invalid_argument(f"empty body: send a {message.DESCRIPTOR.name} as JSON")
    try:
        json_format.Parse(body, message)
    except (json_format.ParseError, UnicodeDecodeError) as error:
        raise invalid_argument(f"not a valid {message.DESCRIPTOR.name}: {error}") from error
    return message


def to_json_dict(message: Message) -> dict:
    """The proto3 JSON mapping, with zero values printed (a rank at index 0 still says so)."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
