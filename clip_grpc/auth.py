"""Bearer tokens on the server (`--auth-token-file`): every ClipService and clip-as-service call
needs `authorization: Bearer <token>` with a token of the file, else UNAUTHENTICATED.

grpc.health.v1 stays open for probes; reflection is open, absent, or behind the token, by
`--reflection on|off|auth`. The file is re-read on SIGHUP and when it changes (a token removed
from it stops working within about a second), and compared in constant time
(clip_grpc.token_file.TokenSet).
"""

from __future__ import annotations

import grpc

from .token_file import TokenSet, bearer_token

HEALTH = "/grpc.health.v1.Health/"
REFLECTION = "/grpc.reflection."
NO_TOKEN = "this server needs a token: send the metadata 'authorization: Bearer <token>'"
NOT_BEARER = "the authorization metadata must be 'Bearer <token>'"
WRONG_TOKEN = "the token is not accepted (wrong, or revoked)"


def load_tokens(path: str) -> TokenSet:
    """The token file, read once now: a missing, unreadable or empty file is a ValueError that
    names the flag."""
    try:
        tokens = TokenSet("auth token file", path)
    except (OSError, ValueError) as error:
        raise ValueError(f"--auth-token-file {path}: cannot be read ({error})") from None
    if not len(tokens):
        raise ValueError(f"--auth-token-file {path} holds no token")
    return tokens


def refusal(metadata, tokens: TokenSet) -> str | None:
    """Why the call's metadata does not authenticate it, or None when it does."""
    authorization = next((value for key, value in metadata or () if key == "authorization"), None)
    if authorization is None:
        return NO_TOKEN
    token = bearer_token(authorization)
    if token is None:
        return NOT_BEARER
    return None if tokens.accepts(token) else WRONG_TOKEN


class TokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: TokenSet, reflection_needs_token: bool):
        self.tokens = tokens
        self.open = (HEALTH,) if reflection_needs_token else (HEALTH, REFLECTION)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(self.open):
            return handler
        reason = refusal(details.invocation_metadata, self.tokens)
        return handler if reason is None else _refusing(handler, reason)


def _refusing(handler: grpc.RpcMethodHandler, reason: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers UNAUTHENTICATED without running it."""

    async def refuse(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    async def refuse_stream(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
        yield  # an async generator, as streaming handlers are; never reached

    codecs = (handler.request_deserializer, handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, *codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, *codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, *codecs)
    return grpc.stream_stream_rpc_method_handler(refuse_stream, *codecs)
