"""clip-as-service's gRPC client (`clip_client.Client('grpc://...')`) on the server's port:
`jina.JinaRPC/Call`, a bidirectional stream of `jina.DataRequestProto`, one answer per message.

A thin translator: each message becomes our own EmbedRequest (encode, and jina's default
endpoint that profile() uses) or one RankRequest per query doc, served by ClipServicer's own
paths; no jina type goes further. Vectors are raw, as clip-server's are. jina has no per-doc
error, so a message with a bad doc is answered with header.status ERROR naming the doc (the
client raises BadServer); the stream goes on. docs_bytes (docarray's pickle) is never read.
"""

from __future__ import annotations

import asyncio

from google.protobuf.timestamp_pb2 import Timestamp

from .errors import ClipError, public_message
from .jina_docs import (
    ENCODE,
    EXECUTOR,
    RANK,
    DocError,
    Span,
    doc_content,
    endpoint_of,
    no_content,
)
from .jina_v1 import docarray_pb2, jina_pb2, jina_pb2_grpc
from .servicer import ClipServicer, ordered_responses
from .v1 import clip_pb2

ERROR = jina_pb2.StatusProto.ERROR
PICKLE_REFUSED = (
    "data.docs_bytes (docarray's pickle-based serialisation) is not accepted: this server never "
    "unpickles; send the docs as data.docs (DocumentArrayProto), as clip-client does"
)


def to_item(doc: docarray_pb2.DocumentProto) -> clip_pb2.Item | None:
    """Our Item for a doc, or None when the doc has no content at all."""
    kind = doc.WhichOneof("content")
    content = doc_content(doc.id, doc.text if kind == "text" else None,
                          doc.blob if kind == "blob" else None, doc.uri, kind == "tensor")
    if content.text is not None:
        return clip_pb2.Item(id=doc.id, text=content.text)
    if content.image is not None:
        return clip_pb2.Item(id=doc.id, image=content.image)
    return None


def required_item(doc: docarray_pb2.DocumentProto) -> clip_pb2.Item:
    item = to_item(doc)
    if item is None:
        raise no_content(doc.id)
    return item


def ndarray(packed: bytes, dim: int) -> docarray_pb2.NdArrayProto:
    # cls_name is required: docarray 0.21 reads no array from an NdArrayProto without it.
    return docarray_pb2.NdArrayProto(
        dense=docarray_pb2.DenseNdArrayProto(buffer=packed, shape=[dim], dtype="<f4"),
        cls_name="numpy")


def set_route(route: jina_pb2.RouteProto, executor: str, span: Span) -> None:
    start, end = span.milliseconds()
    route.executor = executor
    route.start_time.CopyFrom(_timestamp(start))
    route.end_time.CopyFrom(_timestamp(end))


def _timestamp(milliseconds: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(milliseconds)
    return stamp


def weight(request: jina_pb2.DataRequestProto) -> int:
    docs = request.data.docs.docs
    return max(1, len(docs) + sum(len(doc.matches) for doc in docs))


class JinaServicer(jina_pb2_grpc.JinaRPCServicer):
    def __init__(self, clip: ClipServicer):
        self.clip = clip  # its engine is set once the model has loaded

    async def Call(self, request_iterator, context):
        await self.clip._require_ready(context)
        async for response in ordered_responses(
            request_iterator, self.answer, self.clip.engine.config.stream_window, weight
        ):
            yield response

    async def answer(self, request: jina_pb2.DataRequestProto) -> jina_pb2.DataRequestProto:
        gateway = Span.begin()
        response = jina_pb2.DataRequestProto()
        response.header.request_id = request.header.request_id
        response.parameters.CopyFrom(request.parameters)
        executor = Span.begin()
        try:
            if request.data.WhichOneof("documents") == "docs_bytes":
                raise DocError(PICKLE_REFUSED)
            endpoint = endpoint_of(request.header.exec_endpoint)
            docs = request.data.docs.docs
            if endpoint == RANK:
                answers = await self._rank(docs)
            else:
                answers = await self._encode(docs, required=endpoint == ENCODE)
            response.data.docs.docs.extend(answers)
        except (DocError, ClipError) as error:
            message = str(error) if isinstance(error, DocError) else public_message(error)
            response.header.status.code = ERROR
            response.header.status.description = message
            response.header.status.exception.name = type(error).__name__
            response.header.status.exception.args.append(message)
        executor.finish()
        set_route(response.routes.add(), "gateway", gateway.finish())
        set_route(response.routes.add(), EXECUTOR, executor)
        return response

    async def _encode(self, docs, required: bool) -> list[docarray_pb2.DocumentProto]:
        items = [required_item(doc) if required else to_item(doc) for doc in docs]
        wanted = [item for item in items if item is not None]
        embedded = clip_pb2.EmbedResponse()
        if wanted:
            await self.clip._embed_into(embedded.results, wanted, clip_pb2.EmbedOptions(raw=True))
        results = iter(embedded.results)
        answers, errors = [], []
        for doc, item in zip(docs, items, strict=True):
            answer = docarray_pb2.DocumentProto(id=doc.id)
            if item is not None:
                result = next(results)
                if result.HasField("error"):
                    errors.append(f"doc {doc.id!r}: {result.error.message}")
                else:
                    answer.embedding.CopyFrom(ndarray(result.embedding.packed,
                                                      result.embedding.dim))
            answers.append(answer)
        if errors:
            raise DocError("; ".join(errors))
        return answers

    async def _rank(self, docs) -> list[docarray_pb2.DocumentProto]:
        requests = []
        for doc in docs:
            if not doc.matches:
                raise DocError(f"doc {doc.id!r} has no matches to rank")
            requests.append(clip_pb2.RankRequest(
                query=required_item(doc), candidates=[required_item(m) for m in doc.matches]))
        rankings = await asyncio.gather(
            *(self._rank_one(doc.id, r) for doc, r in zip(docs, requests, strict=True)))
        answers = []
        for doc, ranking in zip(docs, rankings, strict=True):
            answer = docarray_pb2.DocumentProto(id=doc.id)
            for ranked in ranking:  # best first
                sent = doc.matches[ranked.index]
                match = answer.matches.add(id=sent.id, uri=sent.uri)
                if sent.WhichOneof("content") == "text":
                    match.text = sent.text
                match.scores["clip_score"].CopyFrom(
                    docarray_pb2.NamedScoreProto(value=ranked.probability, op_name="softmax"))
                match.scores["clip_score_cosine"].CopyFrom(
                    docarray_pb2.NamedScoreProto(value=ranked.cosine, op_name="cosine"))
            answers.append(answer)
        return answers

    async def _rank_one(self, doc_id: str, request: clip_pb2.RankRequest):
        try:
            return await self.clip._rank(request)
        except ClipError as error:
            error.message = f"doc {doc_id!r}: {error.message}"
            raise
