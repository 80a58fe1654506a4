"""Text -> token ids, within the model's context."""

from __future__ import annotations

import json
import threading

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from ..errors import InvalidInput
from .clip_words import CLIP_SPLIT, ClipWords

DEFAULT_MAX_CHARS = 4096
# Most characters of a message's texts that runs_in_python lets its caller (the event loop)
# tokenise: ~50 sentences, ~0.7 ms; at worst (made-up words, cut to the context) ~11 ms.
IN_PLACE_CHARS = 4096


class TextTokenizer:
    """Tokenises texts. Texts over max_chars characters are refused (or, with truncate, cut
    to max_chars) before the tokenizer sees them, so a text costs at most max_chars of work:
    far more characters than the context's tokens ever need, far fewer than a message holds.

    `many` tokenises a whole message's texts: plain ASCII ones for CLIP from a cache of each
    word's ids (clip_words), the rest in one call of the fast (Rust) tokenizer, which runs
    without the GIL; tokenizers without one (sentencepiece) go text by text. Either way each
    text gets the ids, or the InvalidInput, that calling this on it alone gives.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        context_length: int,
        max_chars: int = DEFAULT_MAX_CHARS,
    ):
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.max_chars = max_chars
        self._fast = _batch_tokenizer(tokenizer)
        self._words = ClipWords.of(self._fast) if self._fast is not None else None
        # transformers sets truncation on the shared Rust tokenizer for a truncating call and
        # resets it at the next call: two threads at once could see each other's setting.
        self._shared_backend = threading.Lock()

    def __call__(self, text: str, truncate: bool = False) -> list[int]:
        text = self._bounded(text, truncate)
        return self._fit(text, self._exact(text), truncate)

    def runs_in_python(self, texts: list[str]) -> bool:
        """True where `many(texts)` is short work that holds the GIL throughout (plain ASCII
        for the word cache, IN_PLACE_CHARS at most): another thread would run it no sooner
        than the caller, so the caller may as well, and save the hand-off."""
        return (self._words is not None and sum(map(len, texts)) <= IN_PLACE_CHARS
                and all(text.isascii() for text in texts))

    def many(self, texts: list[str], truncate: bool = False) -> list[list[int] | InvalidInput]:
        """One outcome per text, in order: its token ids or the InvalidInput it alone met."""
        outcomes: list = []
        for text in texts:
            try:
                outcomes.append(self._bounded(text, truncate))
            except InvalidInput as error:
                outcomes.append(error)
        token_ids: dict[int, list[int]] = {}
        batch = []  # for one call of the Rust tokenizer
        for i, text in enumerate(outcomes):
            if not isinstance(text, str):
                continue
            if self._words is not None and (ids := self._words.ids(text)) is not None:
                token_ids[i] = ids
            elif self._fast is not None and "<|" not in text:
                batch.append(i)
            else:  # sentencepiece; CLIP's special tokens written as text (see _batch_tokenizer)
                token_ids[i] = self._exact(text)
        if batch:
            encodings = self._fast.encode_batch_fast([outcomes[i] for i in batch])  # no offsets
            token_ids.update(zip(batch, (encoding.ids for encoding in encodings), strict=True))
        for i, ids in token_ids.items():
            try:
                outcomes[i] = self._fit(outcomes[i], ids, truncate)
            except InvalidInput as error:
                outcomes[i] = error
        return outcomes

    def _bounded(self, text: str, truncate: bool) -> str:
        if len(text) > self.max_chars:
            if not truncate:
                raise InvalidInput(
                    f"text is {len(text)} characters; the limit is {self.max_chars} "
                    "(ask for truncate to cut it)",
                    "text",
                )
            text = text[: self.max_chars]
        if not text.strip():
            raise InvalidInput("text is empty", "text")
        return text

    def _fit(self, text: str, ids: list[int], truncate: bool) -> list[int]:
        if len(ids) <= self.context_length:
            return ids
        if not truncate:
            raise InvalidInput(
                f"text is {len(ids)} tokens; the model takes at most {self.context_length} "
                "(ask for truncate to cut it)",
                "text",
            )
        # The tokenizer truncates the words and keeps the start and end tokens.
        return self._exact(text, truncation=True, max_length=self.context_length)

    def _exact(self, text: str, **options) -> list[int]:
        """The transformers tokenizer's ids: what every other path must equal."""
        with self._shared_backend:
            return self.tokenizer(text, **options).input_ids


def _without_repeated_split(spec: dict) -> None:
    """Turn off ByteLevel's regex after CLIP's Split (which keeps only runs of letters, single
    digits, runs of other non-space characters and the contractions, dropping whitespace),
    where GPT-2's regex can only find what the Split already cut: the same ids, ~25% less CPU
    per short text (BENCHMARKS.md). The one piece it would cut, a special token written as
    text in any case ("<|ENDOFTEXT|>" lowercased), never comes here: `many` gives texts
    holding "<|" to the transformers tokenizer."""
    steps = (spec.get("pre_tokenizer") or {}).get("pretokenizers") or []
    if len(steps) != 2:
        return
    split, byte_level = steps
    if split == CLIP_SPLIT and byte_level.get("type") == "ByteLevel":
        byte_level["use_regex"] = False


def _batch_tokenizer(tokenizer: PreTrainedTokenizerBase):
    """A private copy of the fast tokenizer's Rust tokenizer, set as a plain call of the
    transformers tokenizer sets it (no truncation, no padding; these settings stick on the
    Rust object, so the copy is never shared), or None where there is none."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch"):
        return None
    split_special = bool(getattr(tokenizer, "split_special_tokens", False))
    spec = json.loads(backend.to_str())
    _without_repeated_split(spec)
    fast = Tokenizer.from_str(json.dumps(spec))
    fast.no_truncation()
    fast.no_padding()
    fast.encode_special_tokens = split_special
    return fast
