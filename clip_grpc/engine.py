"""The transport-neutral core: validate, decode, tokenise, batch, normalise. No gRPC types here.

Work goes per message, not per item: `embed` hands a request's texts to a preprocess thread in
one go (one batch call of the tokenizer; on the event loop itself where tokenising them holds
the GIL anyway) and its images a few at a time (IMAGES_PER_HANDOFF, so threads decode in
parallel); each hand-off's good items go to the modality's Batcher as one chunk
with one future and come back as rows of the model's output array. An item that fails to
prepare fails alone, with its own error; a ShuttingDown refuses the whole call.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from . import stages
from .batching import Batcher
from .config import ServerConfig, batch_limits, torch_threads
from .errors import ClipError, InvalidInput, Overloaded, ShuttingDown, grpc_code
from .metrics import ServerMetrics
from .model.encoder import Encoder
from .model.images import decode_image
from .model.loading import LoadedModel
from .model.texts import TextTokenizer
from .scores import clip_score

log = logging.getLogger(__name__)
# Images per hand-off to a preprocess thread: a message's images spread over the threads, and
# each hand-off's cost is shared by a few. Texts: a message's texts (up to this many) in one.
IMAGES_PER_HANDOFF = 4
TEXTS_PER_HANDOFF = 256
PR_SET_NAME = 15  # Linux prctl option
GRACE_OVER = (
    "the server shut down before this was embedded (the shutdown grace period ran out); retry"
)


@dataclass(frozen=True)
class Input:
    """One item to embed: exactly one of text and image is set."""

    id: str
    text: str | None = None
    image: bytes | None = None


@dataclass(frozen=True)
class Ranked:
    index: int
    id: str
    cosine: float
    probability: float
    score: int


async def _settled(jobs: list) -> list:
    """Each job's result or exception, as gather(return_exceptions=True) gives them, without
    its task per job when there is only one (a message of texts: the common case)."""
    if len(jobs) != 1:
        return await asyncio.gather(*jobs, return_exceptions=True)
    try:
        return [await jobs[0]]
    except Exception as error:
        return [error]


def name_os_thread() -> None:
    """Give the calling thread its Python name ("preprocess_0" -> "preprocess-0") in the OS too
    (/proc/PID/task/TID/comm, top -H, the bench's busiest thread), where the OS lets us."""
    name = threading.current_thread().name.replace("_", "-").encode()[:15]
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None).prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


RAW, UNIT = 0, 1  # the two rows of each item in the batchers' outputs


def raw_and_unit(run_batch, payloads: list) -> np.ndarray:
    """In the model thread: run_batch's output (n, dim) as (n, 2, dim), each item's raw vector
    then its L2-normalised one, so that the event loop only slices what a call asked for."""
    raw = run_batch(payloads)
    both = np.empty((raw.shape[0], 2, raw.shape[1]), dtype=raw.dtype)
    both[:, RAW] = raw
    both[:, UNIT] = l2_normalize(raw)
    return both


def _in_groups(indices: list[int], size: int) -> list[list[int]]:
    return [indices[k : k + size] for k in range(0, len(indices), size)]


class Engine:
    def __init__(
        self, loaded: LoadedModel, config: ServerConfig, metrics: ServerMetrics | None = None
    ):
        self.loaded = loaded
        self.config = config
        self.batch_limits = batch_limits(config, loaded.device)  # {"image": n, "text": m}
        self.metrics = metrics or ServerMetrics()
        self.metrics.use_batch_limits(self.batch_limits)
        self.encoder = Encoder(loaded, self.batch_limits, config.compile)
        self.tokenize = TextTokenizer(
            loaded.tokenizer, loaded.context_length, config.max_text_chars
        )
        workers = config.preprocess_workers or os.cpu_count() or 1
        self._preprocess_pool = ThreadPoolExecutor(
            workers, thread_name_prefix="preprocess", initializer=name_os_thread
        )
        self._model_thread = ThreadPoolExecutor(
            1, thread_name_prefix="model", initializer=name_os_thread
        )
        wait_s = config.max_wait_ms / 1000
        self.image_batcher = Batcher(
            "image", functools.partial(raw_and_unit, self.encoder.embed_images),
            self._model_thread, self.batch_limits["image"], wait_s,
        )
        self.text_batcher = Batcher(
            "text", functools.partial(raw_and_unit, self.encoder.embed_texts),
            self._model_thread, self.batch_limits["text"], wait_s,
        )
        self.batchers = {"image": self.image_batcher, "text": self.text_batcher}
        self.in_flight = 0
        self.items_in_flight = {"image": 0, "text": 0}  # per modality, for the metrics
        self.preparing = {"image": 0, "text": 0}  # in a preprocess thread or waiting for one
        for modality, batcher in self.batchers.items():  # a batch waits only for these
            batcher.coming = functools.partial(self.preparing.get, modality)
        self.accepting = False
        self.refusing = False  # the shutdown grace is over: what is left gets ShuttingDown

    async def start(self) -> None:
        """Start the batchers and run one warm-up batch of each kind through the model."""
        self.torch_threads = self._model_thread.submit(self._set_up_model_thread).result()
        # --compile: every batch size is compiled now, in the thread that will run it.
        await asyncio.get_running_loop().run_in_executor(self._model_thread, self.encoder.warm_up)
        self.image_batcher.start()
        self.text_batcher.start()
        await self.image_batcher.submit(self.encoder.blank_image())
        await self.text_batcher.submit(self.tokenize("warm up"))
        for modality, batcher in self.batchers.items():  # warm-up batches are not counted
            batcher.on_batch = functools.partial(self.metrics.batch_done, modality)
        self.accepting = True

    def _set_up_model_thread(self) -> int:
        """In the model thread: no autograd, torch's CPU threads by device; how many it has."""
        torch.set_grad_enabled(False)
        if (threads := torch_threads(self.config, self.loaded.device)) is not None:
            torch.set_num_threads(threads)
        return torch.get_num_threads()

    def refuse_remaining(self) -> None:
        """The shutdown grace is over: every item not yet in the model fails with ShuttingDown,
        so its caller gets UNAVAILABLE (and can retry elsewhere) instead of silence."""
        self.accepting, self.refusing = False, True
        for batcher in self.batchers.values():
            batcher.refuse_queued(ShuttingDown(GRACE_OVER))

    def _check_not_refusing(self) -> None:
        if self.refusing:
            raise ShuttingDown(GRACE_OVER)

    async def close(self) -> None:
        self.accepting = False
        await self.image_batcher.stop()
        await self.text_batcher.stop()
        self._preprocess_pool.shutdown(wait=False, cancel_futures=True)
        self._model_thread.shutdown(wait=True)

    @contextlib.contextmanager
    def admit(self, count: int):
        """Reserve room for count items in flight, or fail at once with Overloaded."""
        if not self.accepting:
            self.metrics.item_failed(ShuttingDown.code.name, count)
            raise ShuttingDown("the server is shutting down")
        if count > self.config.max_queue_size:  # could never fit: retrying cannot help
            self.metrics.item_failed(InvalidInput.code.name, count)
            raise InvalidInput(
                f"the request has {count} items; the server takes at most "
                f"{self.config.max_queue_size} at once (--max-queue-size): split it",
                "items",
            )
        if self.in_flight + count > self.config.max_queue_size:
            self.metrics.item_failed(Overloaded.code.name, count)
            raise Overloaded(
                f"server busy: {self.in_flight} items in flight, limit "
                f"{self.config.max_queue_size}; retry later"
            )
        self.in_flight += count
        try:
            yield
        finally:
            self.in_flight -= count

    def _tokenize_many(
        self, texts: list[str], gone: threading.Event, truncate: bool
    ) -> list[list[int] | ClipError]:
        self._check_not_refusing()
        return self.tokenize.many(texts, truncate)

    def _prepare_images(
        self, images: list[bytes], gone: threading.Event
    ) -> list[np.ndarray | BaseException]:
        """In a preprocess thread: each image decoded and normalised, or what it alone met;
        the rest are left when the caller has gone away."""
        prepared: list[np.ndarray | BaseException] = []
        for data in images:
            if gone.is_set():
                break
            try:
                prepared.append(self._prepare_image(data))
            except Exception as error:  # this item fails, the others go on
                prepared.append(error)
        return prepared

    def _prepare_image(self, data: bytes) -> np.ndarray:
        self._check_not_refusing()
        transform = self.loaded.image_transform
        draft_size = transform.draft_size if self.config.jpeg_decode == "draft" else None
        image = decode_image(
            data, self.config.max_image_bytes, self.config.max_image_pixels, draft_size,
            max_aspect_ratio=self.config.max_image_aspect_ratio,
        )
        return self.encoder.pixels(image)

    async def _embed_chunk(self, modality: str, prepare, inputs: list, raw: bool, *args,
                           in_place: bool = False) -> list:
        """One hand-off to a preprocess thread for all of inputs (in_place: prepared here
        instead), one chunk to the batcher for those that prepared well: an outcome per input
        (vector, or the exception it met)."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        self.items_in_flight[modality] += len(inputs)
        gone = threading.Event()
        try:
            self.preparing[modality] += len(inputs)
            try:
                if in_place:
                    prepared = prepare(inputs, gone, *args)
                else:
                    prepared = await loop.run_in_executor(
                        self._preprocess_pool, prepare, inputs, gone, *args
                    )
            finally:
                self.preparing[modality] -= len(inputs)
            preprocess_s = time.perf_counter() - started
            self._check_not_refusing()
            good = [i for i, p in enumerate(prepared) if not isinstance(p, BaseException)]
            if not good:
                return prepared
            outputs, queue_s, forward_s = await self.batchers[modality].submit_many_timed(
                [prepared[i] for i in good]
            )
        except asyncio.CancelledError:
            gone.set()
            raise
        finally:
            self.items_in_flight[modality] -= len(inputs)
        vectors = outputs[:, RAW if raw else UNIT]
        for i, vector in zip(good, vectors, strict=True):
            prepared[i] = vector
        self.metrics.items_done(modality, len(good), preprocess_s, queue_s)
        if (call_times := stages.current.get()) is not None:
            call_times.item(preprocess_s, queue_s, forward_s)
        return prepared

    async def _embed_all(self, items: list[Input], raw: bool, truncate: bool) -> list:
        """An outcome per item: a vector or the exception it met. A message's texts go in one
        hand-off; its images in hand-offs of IMAGES_PER_HANDOFF, so threads decode in parallel."""
        outcomes: list = [None] * len(items)
        images = [i for i, item in enumerate(items) if item.image is not None]
        texts = [i for i, item in enumerate(items) if item.image is None and item.text is not None]
        for i, item in enumerate(items):
            if item.image is None and item.text is None:
                outcomes[i] = InvalidInput("item has neither text nor image", "content")
        groups = _in_groups(texts, TEXTS_PER_HANDOFF)
        jobs = []
        for group in groups:
            texts_of_group = [items[i].text for i in group]
            jobs.append(self._embed_chunk(
                "text", self._tokenize_many, texts_of_group, raw, truncate,
                in_place=self.tokenize.runs_in_python(texts_of_group),
            ))
        image_groups = _in_groups(images, IMAGES_PER_HANDOFF)
        jobs += [
            self._embed_chunk("image", self._prepare_images, [items[i].image for i in group], raw)
            for group in image_groups
        ]
        for group, done in zip(groups + image_groups, await _settled(jobs), strict=True):
            for position, i in enumerate(group):  # a chunk that failed whole fails each item
                outcomes[i] = done if isinstance(done, BaseException) else done[position]
        return outcomes

    async def embed(
        self, items: list[Input], raw: bool = False, truncate: bool = False
    ) -> list[np.ndarray | ClipError]:
        """One outcome per item, in order: a vector, or the error that item alone met."""
        with self.admit(len(items)):
            outcomes = await self._embed_all(items, raw, truncate)
        for outcome in outcomes:
            if isinstance(outcome, ShuttingDown):  # the whole call is refused, to be retried
                raise outcome
        results: list[np.ndarray | ClipError] = []
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, ClipError):
                self.metrics.item_failed(grpc_code(outcome).name)
                results.append(outcome)
            elif isinstance(outcome, BaseException):
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                log.error("embedding failed", exc_info=outcome, extra={"item_id": item.id})
                self.metrics.item_failed(ClipError.code.name)
                results.append(ClipError("internal error while embedding this item"))
            else:
                results.append(outcome)
        return results

    async def rank(self, query: Input, candidates: list[Input], truncate: bool) -> list[Ranked]:
        """Score candidates against the query, best first. Any bad input fails the ranking."""
        if not candidates:
            raise InvalidInput("rank needs at least one candidate", "candidates")
        items = [query, *candidates]
        outcomes = await self.embed(items, truncate=truncate)
        for position, outcome in enumerate(outcomes):
            if isinstance(outcome, ClipError):
                where = "query" if position == 0 else f"candidates[{position - 1}]"
                outcome.message = f"{where} (id {items[position].id!r}): {outcome.message}"
                outcome.field = where if not outcome.field else f"{where}.{outcome.field}"
                raise outcome
        query_vector, candidate_vectors = outcomes[0], np.stack(outcomes[1:])
        cosines = candidate_vectors @ query_vector
        logits = self.loaded.logit_scale * cosines.astype(np.float64)
        if self.loaded.family == "siglip":
            probabilities = 1.0 / (1.0 + np.exp(-(logits + self.loaded.logit_bias)))
        else:
            exps = np.exp(logits - logits.max())
            probabilities = exps / exps.sum()
        order = sorted(range(len(candidates)), key=lambda i: (-cosines[i], i))
        return [
            Ranked(i, candidates[i].id, float(cosines[i]), float(probabilities[i]),
                   clip_score(float(cosines[i])))
            for i in order
        ]
