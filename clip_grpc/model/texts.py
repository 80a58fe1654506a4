"""Text -> token ids, within the model's context."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from ..errors import InvalidInput

DEFAULT_MAX_CHARS = 4096


class TextTokenizer:
    """Tokenises one text. Texts over max_chars characters are refused (or, with truncate, cut
    to max_chars) before the tokenizer sees them, so a text costs at most max_chars of work:
    far more characters than the context's tokens ever need, far fewer than a message holds."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        context_length: int,
        max_chars: int = DEFAULT_MAX_CHARS,
    ):
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.max_chars = max_chars

    def __call__(self, text: str, truncate: bool = False) -> list[int]:
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
