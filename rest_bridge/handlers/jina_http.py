"""clip-as-service's HTTP client (`clip_client.Client('http://...')`): jina DataRequest JSON on
POST /post and /default (and /encode, /rank, which `shared_routes` hands over by body shape).

The client parses everything but `data` strictly into jina.DataRequestProto, so an answer holds
only `header`, `parameters`, `routes` and `data`. Vectors are raw, as clip-server's are; rank
scores are `clip_score` (the server's Rank probability: a softmax with the model's logit scale)
and `clip_score_cosine`, best first.
"""

from __future__ import annotations

import asyncio
import base64

from clip_grpc.jina_docs import (
    DEFAULT,
    ENCODE,
    EXECUTOR,
    RANK,
    Content,
    DocError,
    Span,
    doc_content,
    endpoint_of,
    no_content,
    rfc3339,
)
from clip_grpc.v1 import clip_pb2
from rest_bridge.handlers.base import BaseHandler, BodyHandler
from rest_bridge.status_map import ApiError, from_item_error, invalid_argument
from rest_bridge.transcoding import parse_any_json
from rest_bridge.vectors import to_array

SUCCESS, ERROR = 0, 1


def error_body(request_id: str, error: ApiError) -> dict:
    """jina's error header: the client raises BadServer / ConnectionError with its description."""
    status = {"code": ERROR, "description": error.message,
              "exception": {"name": error.code, "args": [error.message]}}
    return {"header": {"request_id": request_id, "status": status}}


def route(executor: str, span: Span) -> dict:
    start, end = span.milliseconds()
    return {"executor": executor, "start_time": rfc3339(start), "end_time": rfc3339(end)}


def read_doc(doc) -> tuple[str, Content]:
    if not isinstance(doc, dict):
        raise DocError("every entry of data must be a Document object")
    doc_id = str(doc.get("id") or "")
    for key in ("text", "blob", "uri"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise DocError(f"doc {doc_id!r}: {key} must be a string")
    blob = doc.get("blob")
    if blob:
        try:
            blob = clip_bytes(blob)
        except ValueError:
            raise DocError(f"doc {doc_id!r}: blob is not valid base64") from None
    content = doc_content(doc_id, doc.get("text"), blob, doc.get("uri"),
                          doc.get("tensor") is not None)
    return doc_id, content


def clip_bytes(text: str) -> bytes:
    return base64.b64decode("".join(text.split()), validate=True)


def to_item(doc_id: str, content: Content) -> clip_pb2.Item:
    if content.text is not None:
        return clip_pb2.Item(id=doc_id, text=content.text)
    return clip_pb2.Item(id=doc_id, image=content.image)


class JinaRequest:
    """One DataRequest body, answered by `answer()` through the handler's gRPC calls."""

    def __init__(self, handler: BaseHandler, payload: dict, path_endpoint: str):
        self.handler = handler
        self.gateway = Span.begin()
        header = payload.get("header") if isinstance(payload.get("header"), dict) else {}
        self.request_id = str(header.get("request_id") or handler.request_id)
        parameters = payload.get("parameters")
        self.parameters = parameters if isinstance(parameters, dict) else {}
        self.endpoint_name = header.get("exec_endpoint") or payload.get("exec_endpoint") \
            or path_endpoint
        docs = payload.get("data")
        if isinstance(docs, dict):  # {"docs": [...]} as some jina versions send it
            docs = docs.get("docs")
        self.docs = docs if isinstance(docs, list) else []

    async def answer(self) -> None:
        try:
            endpoint = endpoint_of(str(self.endpoint_name))
            executor = Span.begin()
            if endpoint == RANK:
                data = await self._rank()
            else:
                data = await self._encode(required=endpoint == ENCODE)
            executor.finish()
        except DocError as error:
            raise invalid_argument(str(error), "data") from None
        self.handler.write_json({
            "header": {"request_id": self.request_id, "status": {"code": SUCCESS}},
            "parameters": self.parameters,
            "routes": [route("gateway", self.gateway.finish()), route(EXECUTOR, executor)],
            "data": data,
        })

    async def _encode(self, required: bool) -> list[dict]:
        read = [read_doc(doc) for doc in self.docs]
        wanted = [(doc_id, c) for doc_id, c in read if not c.empty]
        if required and len(wanted) < len(read):
            raise no_content(next(doc_id for doc_id, c in read if c.empty))
        embeddings: dict[int, object] = {}
        if wanted:
            items = [to_item(doc_id, content) for doc_id, content in wanted]
            request = clip_pb2.EmbedRequest(items=items, options=clip_pb2.EmbedOptions(raw=True))
            response = await self.handler.call_grpc(self.handler.backend.clip.Embed, request)
            errors = [f"doc {item.id!r}: {r.error.message}"
                      for item, r in zip(items, response.results, strict=True)
                      if r.HasField("error")]
            if errors:
                first = next(r.error for r in response.results if r.HasField("error"))
                raise from_item_error(first.code, "; ".join(errors), "data")
            positions = [i for i, (_, c) in enumerate(read) if not c.empty]
            for position, result in zip(positions, response.results, strict=True):
                embeddings[position] = to_array(result.embedding)
            self.handler.images += sum(item.HasField("image") for item in items)
            self.handler.texts += sum(item.HasField("text") for item in items)
        else:
            # Nothing to embed (profile()'s empty doc): the executor's route times a round trip
            # to the server.
            await self.handler.call_grpc(self.handler.backend.clip.Info, clip_pb2.InfoRequest())
        return [{"id": doc_id, **({"embedding": embeddings[i]} if i in embeddings else {})}
                for i, (doc_id, _) in enumerate(read)]

    async def _rank(self) -> list[dict]:
        queries = []
        for doc in self.docs:
            doc_id, content = read_doc(doc)
            if content.empty:
                raise no_content(doc_id)
            matches = doc.get("matches")
            if not isinstance(matches, list) or not matches:
                raise DocError(f"doc {doc_id!r} has no matches to rank")
            candidates = []
            for match in matches:
                match_id, match_content = read_doc(match)
                if match_content.empty:
                    raise no_content(match_id)
                candidates.append((match, to_item(match_id, match_content)))
            queries.append((doc_id, to_item(doc_id, content), candidates))
        ranked = await asyncio.gather(*(self._rank_one(*query) for query in queries))
        return [{"id": doc_id, "matches": matches}
                for (doc_id, _, _), matches in zip(queries, ranked, strict=True)]

    async def _rank_one(self, doc_id: str, query: clip_pb2.Item, candidates) -> list[dict]:
        request = clip_pb2.RankRequest(query=query, candidates=[item for _, item in candidates])
        try:
            response = await self.handler.call_grpc(self.handler.backend.clip.Rank, request)
        except ApiError as error:
            error.message = f"doc {doc_id!r}: {error.message}"
            error.field = "data"
            raise
        self.handler.images += sum(i.HasField("image") for i in [query, *request.candidates])
        self.handler.texts += sum(i.HasField("text") for i in [query, *request.candidates])
        answer = []
        for ranked in response.candidates:  # best first
            match = candidates[ranked.index][0]
            entry = {"id": ranked.id}
            for key in ("text", "uri"):
                if match.get(key):
                    entry[key] = match[key]
            entry["scores"] = {
                "clip_score": {"value": ranked.probability, "op_name": "softmax"},
                "clip_score_cosine": {"value": ranked.cosine, "op_name": "cosine"},
            }
            answer.append(entry)
        return answer


class JinaHandlerMixin:
    """Answers errors in jina's shape once the body is known to be a DataRequest."""

    jina_request_id: str | None = None

    def error_body(self, error: ApiError) -> dict:
        if self.jina_request_id is None:
            return super().error_body(error)
        return error_body(self.jina_request_id, error)

    async def answer_jina(self, payload: dict, path_endpoint: str) -> None:
        request = JinaRequest(self, payload, path_endpoint)
        self.jina_request_id = request.request_id
        await request.answer()


def _jina_payload(body: bytes):
    payload = parse_any_json(body)
    if not isinstance(payload, dict):
        raise invalid_argument("the body must be a jina DataRequest: {header, parameters, data}")
    return payload


class PostHandler(JinaHandlerMixin, BodyHandler):
    """jina's generic POST /post: the endpoint is the body's exec_endpoint."""

    route = "/post"

    async def handle(self, body: bytes) -> None:
        await self.answer_jina(_jina_payload(body), DEFAULT)


class DefaultHandler(JinaHandlerMixin, BodyHandler):
    route = "/default"

    async def handle(self, body: bytes) -> None:
        await self.answer_jina(_jina_payload(body), DEFAULT)
