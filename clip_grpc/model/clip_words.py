"""CLIP's tokenizer for plain ASCII text, word by word from a cache of each word's ids.

The Rust tokenizer spends ~60 us on a short sentence, mostly on bookkeeping the server never
reads (alignments, offsets, token strings); this spends ~8 (BENCHMARKS.md). It takes a text
only where it provably gives the Rust tokenizer's ids, and says None to every other text.

On printable ASCII, CLIP's pipeline reduces to: lowercase (NFC changes nothing), cut into
contractions, runs of letters, single digits and runs of other non-space characters (the
whitespace falls away, so its normalisation does not matter), map each piece's bytes to
characters (ByteLevel maps '!'..'~' to themselves), BPE each piece on its own, and put the
start and end tokens around. BPE sees each piece alone, so a piece's ids never depend on its
neighbours: they are cached. Texts that mention an added token ("<|endoftext|>") go to the
Rust tokenizer, which matches those before anything else.
"""

from __future__ import annotations

import json
import re

from tokenizers import Tokenizer

# Tab, newline, vertical tab, form feed, carriage return and printable ASCII: whitespace
# here is whitespace to both Python's \s and Rust's Unicode one (unlike \x1c-\x1f).
_PLAIN_ASCII = re.compile(r"[\t\n\x0b\x0c\r -~]*")
# CLIP's Split pattern on lowercased ASCII, without its special-token alternatives.
_PIECES = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")
# The pipeline this module stands in for, as the tokenizer's JSON spells it.
_NORMALIZER = {"type": "Sequence", "normalizers": [
    {"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
    {"type": "Lowercase"}]}
CLIP_SPLIT = {"type": "Split", "behavior": "Removed", "invert": True, "pattern": {"Regex": (
    "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|"
    "[^\\s\\p{L}\\p{N}]+")}}
_SPECIAL_PIECES = ("<|startoftext|>", "<|endoftext|>")

# Bounds the cache against a stream of made-up words: at most this many words of at most
# MAX_CACHED_CHARS each (a few MB); longer pieces are worked out each time.
MAX_CACHED_WORDS = 65_536
MAX_CACHED_CHARS = 48


class ClipWords:
    """Token ids of plain ASCII texts for a CLIP tokenizer; `of` builds one or says None."""

    def __init__(self, tokenizer: Tokenizer, start_id: int, end_id: int, markers: tuple[str, ...]):
        self._bpe = tokenizer.model
        self._start_id = start_id
        self._end_id = end_id
        self._markers = markers
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> ClipWords | None:
        """One for a Rust tokenizer set up exactly as CLIP's, otherwise None."""
        spec = json.loads(tokenizer.to_str())
        steps = (spec.get("pre_tokenizer") or {}).get("pretokenizers") or []
        post = spec.get("post_processor") or {}
        model = spec.get("model") or {}
        if not (
            spec.get("normalizer") == _NORMALIZER
            and len(steps) == 2 and steps[0] == CLIP_SPLIT and steps[1].get("type") == "ByteLevel"
            and not steps[1].get("add_prefix_space")
            and model.get("type") == "BPE" and model.get("dropout") is None
            and post.get("type") == "RobertaProcessing"
        ):
            return None
        markers = _SPECIAL_PIECES + tuple(token["content"] for token in spec["added_tokens"])
        return cls(tokenizer, post["cls"][1], post["sep"][1], markers)

    def ids(self, text: str) -> list[int] | None:
        """The text's ids, start and end tokens included; None where it is not plain ASCII
        or mentions a special token (the caller asks the Rust tokenizer instead)."""
        if not _PLAIN_ASCII.fullmatch(text):
            return None
        lowered = text.lower()
        if any(marker in lowered or marker in text for marker in self._markers):
            return None
        ids = [self._start_id]
        cache = self._cache
        for piece in _PIECES.findall(lowered):
            try:
                ids += cache[piece]
            except KeyError:
                ids += self._word_ids(piece)
        ids.append(self._end_id)
        return ids

    def _word_ids(self, piece: str) -> list[int]:
        word_ids = [token.id for token in self._bpe.tokenize(piece)]
        if len(piece) <= MAX_CACHED_CHARS:
            if len(self._cache) >= MAX_CACHED_WORDS:
                self._cache.clear()
            self._cache[piece] = word_ids
        return word_ids
