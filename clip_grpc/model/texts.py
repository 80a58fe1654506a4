"""Text -> token ids, within the model's context."""

from __future__ import annotations

import json
import threading

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from ..errors import InvalidInput

DEFAULT_MAX_CHARS = 4096


class TextTokenizer:
    """Tokenises texts. Texts over max_chars characters are refused (or, with truncate, cut
    to max_chars) before the tokenizer sees them, so a text costs at most max_chars of work:
    far more characters than the context's tokens ever need, far fewer than a message holds.

    `many` tokenises a whole message's texts in one call of the fast (Rust) tokenizer, which
    runs without the GIL; tokenizers without one (sentencepiece) go text by text. Either way
    each text gets the ids, or the InvalidInput, that calling this on it alone gives.
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
        # transformers sets truncation on the shared Rust tokenizer for a truncating call and
        # resets it at the next call: two threads at once could see each other's setting.
        self._truncating = threading.Lock()

    def __call__(self, text: str, truncate: bool = False) -> list[int]:
        text = self._bounded(text, truncate)
        return self._fit(text, self.tokenizer(text).input_ids, truncate)

    def many(self, texts: list[str], truncate: bool = False) -> list[list[int] | InvalidInput]:
        """One outcome per text, in order: its token ids or the InvalidInput it alone met."""
        outcomes: list = []
        for text in texts:
            try:
                outcomes.append(self._bounded(text, truncate))
            except InvalidInput as error:
                outcomes.append(error)
        good = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, str)]
        if self._fast is not None:
            encodings = self._fast.encode_batch_fast([outcomes[i] for i in good])  # no offsets
            token_ids = [encoding.ids for encoding in encodings]
        else:
            token_ids = [self.tokenizer(outcomes[i]).input_ids for i in good]
        for i, ids in zip(good, token_ids, strict=True):
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
        with self._truncating:
            return self.tokenizer(text, truncation=True, max_length=self.context_length).input_ids


# CLIP's pre-tokenizer: this Split keeps only runs of letters, single digits, runs of other
# non-space characters and the contractions, dropping the whitespace; the ByteLevel after it
# then splits each piece again with GPT-2's regex, which finds every such piece whole.
CLIP_SPLIT = (
    "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|"
    "[^\\s\\p{L}\\p{N}]+"
)


def _without_repeated_split(spec: dict, encode_special_tokens: bool) -> None:
    """Turn off ByteLevel's regex after CLIP's Split, where it can only find what the Split
    already cut: the same ids, ~25% less CPU per short text (BENCHMARKS.md). Not when special
    tokens are split as text: "<|endoftext|>" is one Split piece that GPT-2's regex cuts."""
    steps = (spec.get("pre_tokenizer") or {}).get("pretokenizers") or []
    if encode_special_tokens or len(steps) != 2:
        return
    split, byte_level = steps
    clip_split = {"type": "Split", "pattern": {"Regex": CLIP_SPLIT}, "behavior": "Removed",
                  "invert": True}
    if split == clip_split and byte_level.get("type") == "ByteLevel":
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
    _without_repeated_split(spec, split_special)
    fast = Tokenizer.from_str(json.dumps(spec))
    fast.no_truncation()
    fast.no_padding()
    fast.encode_special_tokens = split_special
    return fast
