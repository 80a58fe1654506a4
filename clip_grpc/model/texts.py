"""Text -> token ids, within the model's context."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from ..errors import InvalidInput


class TextTokenizer:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, context_length: int):
        self.tokenizer = tokenizer
        self.context_length = context_length

    def __call__(self, text: str, truncate: bool = False) -> list[int]:
        if not text.strip():
            raise InvalidInput("text is empty", "text")
        ids = self.tokenizer(text).input_ids
        if len(ids) <= self.context_length:
            return ids
        if not truncate:
            raise InvalidInput(
                f"text is {len(ids)} tokens; the model takes at most {self.context_length} "
                "(ask for truncate to cut it)",
                "text",
            )
        # The tokenizer truncates the words and keeps the start and end tokens.
        return self.tokenizer(text, truncation=True, max_length=self.context_length).input_ids
