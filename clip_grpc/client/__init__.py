"""Python client for clip-grpc: `Client(target).encode([...])` and friends.

See `Client` for the API and `clip_grpc.client.items` for how an input becomes a text or an
image.
"""

from clip_grpc.client.client import Client
from clip_grpc.client.errors import ItemFailedError, ItemFailure
from clip_grpc.client.items import Image, Text
from clip_grpc.client.results import EncodeResult, Match, Outcome
from clip_grpc.client.stream import Refused, RetryPolicy, StreamProtocolError

__all__ = [
    "Client",
    "EncodeResult",
    "Image",
    "ItemFailedError",
    "ItemFailure",
    "Match",
    "Outcome",
    "Refused",
    "RetryPolicy",
    "StreamProtocolError",
    "Text",
]
