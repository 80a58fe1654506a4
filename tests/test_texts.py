"""Tokenising a message's texts at once gives each text what tokenising it alone gives."""

import json
import random

import pytest

from clip_grpc.errors import InvalidInput
from clip_grpc.model import clip_words
from clip_grpc.model.loading import load_model
from clip_grpc.model.texts import TextTokenizer
from tests.model_factory import save_clip, save_siglip2_fixed, save_siglip_published

TEXTS = [
    "a dog",
    "Café naïve résumé, 🙂 and punctuation!",
    "   ",  # empty
    "word " * 79,  # too many tokens unless truncated
    "x" * 500,  # over the character bound below unless truncated
    "A Photo OF a CAT <|endoftext|>",
    "",
    "fine",
]


def one_by_one(tokenize: TextTokenizer, texts, truncate):
    outcomes = []
    for text in texts:
        try:
            outcomes.append(tokenize(text, truncate))
        except InvalidInput as error:
            outcomes.append(error)
    return outcomes


def assert_same(batched, alone):
    assert len(batched) == len(alone)
    for many, one in zip(batched, alone, strict=True):
        if isinstance(one, InvalidInput):
            assert isinstance(many, InvalidInput)
            assert (many.message, many.field) == (one.message, one.field)
        else:
            assert many == one


@pytest.mark.parametrize("truncate", [False, True])
def test_a_batch_of_texts_tokenises_as_each_text_alone(tiny_clip, truncate):
    tokenize = TextTokenizer(tiny_clip.tokenizer, tiny_clip.context_length, max_chars=400)
    assert tokenize._fast is not None  # the Rust batch call is what is under test
    batched = tokenize.many(TEXTS, truncate)
    assert_same(batched, one_by_one(tokenize, TEXTS, truncate))
    errors = [o.message for o in batched if isinstance(o, InvalidInput)]
    if truncate:
        assert len(batched[3]) == 77 and batched[3][0] == batched[0][0]  # start token kept
        assert batched[3][-1] == batched[0][-1]  # and the end token
        assert errors == ["text is empty"] * 2
    else:
        assert any("at most 77" in m for m in errors) and any("limit is 400" in m for m in errors)


def test_a_truncating_call_does_not_leave_the_batch_call_truncating(tiny_clip):
    tokenize = TextTokenizer(tiny_clip.tokenizer, tiny_clip.context_length)
    tiny_clip.tokenizer("word " * 100, truncation=True, max_length=5)  # sticks on its backend
    long = tokenize.many(["word " * 100])[0]
    assert isinstance(long, InvalidInput) and "102 tokens" in long.message


@pytest.mark.parametrize("make", [save_siglip_published, save_siglip2_fixed])
@pytest.mark.parametrize("truncate", [False, True])
def test_sentencepiece_and_gemma_tokenizers_batch_too(tmp_path, make, truncate):
    loaded = load_model(make(tmp_path / "model"), "cpu", "fp32")
    tokenize = TextTokenizer(loaded.tokenizer, loaded.context_length, max_chars=400)
    assert_same(tokenize.many(TEXTS, truncate), one_by_one(tokenize, TEXTS, truncate))


# Pieces that CLIP's pre-tokenizer treats differently: letters of several scripts, accents
# written as combining marks, digits of other scripts, contractions with straight and curly
# apostrophes, punctuation runs, emoji, odd whitespace and the special tokens written as text.
PIECES = [
    "a", "Z", "é", "e\u0301", "ß", "дом", "東京", "ك", "ñ", "I", "'s", "'t", "'re", "'ve", "'m",
    "'ll", "'d", "'", "\u2019s", "'S", "7", "42", "٣", "½", "!", "?!", "...", "-", "$", "#1",
    "(", ")", "🙂", "👍🏽", "\u200d", "_", "@", "/", "<|endoftext|>", "<|startoftext|>", "<|",
    " ", "  ", "\t", "\n", "\u00a0", "\u3000",
]


def random_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 14))) for _ in range(count)]


@pytest.mark.parametrize("split_special_tokens", [False, True])
def test_the_batch_tokenizer_gives_the_transformers_tokenizers_ids(tmp_path, split_special_tokens):
    """The batch path turns off ByteLevel's second regex split for CLIP's tokenizer; every text
    still gets the transformers tokenizer's ids, special tokens split as text or not."""
    loaded = load_model(save_clip(tmp_path / "model"), "cpu", "fp32")
    tokenizer = loaded.tokenizer
    tokenizer.split_special_tokens = split_special_tokens
    tokenize = TextTokenizer(tokenizer, context_length=10_000)
    byte_level = json.loads(tokenize._fast.to_str())["pre_tokenizer"]["pretokenizers"][1]
    assert byte_level["use_regex"] is False
    texts = [t for t in random_texts(3000) if t.strip()]
    batched = tokenize.many(texts)
    mismatched = [(t, ids) for t, ids in zip(texts, batched, strict=True)
                  if ids != tokenizer(t).input_ids]
    assert not mismatched, mismatched[:3]


# Plain ASCII pieces for the word cache (clip_words): words in any case, contractions, digit
# runs, punctuation runs, every kind of whitespace, the special tokens written as text in
# both cases, and characters just outside its reach (\x1c-\x1f, DEL, NUL, a non-ASCII letter).
ASCII_PIECES = [
    "a", "photo", "OF", "Cat", "dogs", "mcdonald", "xylophonist", "I", "'s", "'T", "'re", "'ve",
    "'m", "'ll", "'d", "'", "''s", "n't", "7", "1999", "3.5", "!", "?!", "...", "-", "$", "#1",
    "(", ")", "<", "|", ">", "_", "@", "/", "\\", "~", "`", "{}", " ", "  ", "\t", "\n", "\r\n",
    "\x0b", "\x0c", "<|endoftext|>", "<|ENDOFTEXT|>", "<|startoftext|>", "<|", "\x1c", "\x1f",
    "\x7f", "\x00", "é",
]


@pytest.mark.parametrize("split_special_tokens", [False, True])
def test_plain_ascii_texts_get_the_transformers_tokenizers_ids_from_the_word_cache(
        tmp_path, split_special_tokens):
    loaded = load_model(save_clip(tmp_path / "model"), "cpu", "fp32")
    loaded.tokenizer.split_special_tokens = split_special_tokens
    tokenize = TextTokenizer(loaded.tokenizer, context_length=10_000)
    rng = random.Random(1)
    texts = ["".join(rng.choice(ASCII_PIECES) for _ in range(rng.randint(1, 14)))
             for _ in range(4000)]
    texts = [t for t in texts if t.strip()]
    from_cache = [t for t in texts if tokenize._words.ids(t) is not None]
    assert len(from_cache) > len(texts) / 3  # the cache's path is what this test checks
    assert not [t for t in from_cache if "endoftext" in t.lower() or "\x1c" in t]  # went to Rust
    batched = tokenize.many(texts)
    mismatched = [(t, ids) for t, ids in zip(texts, batched, strict=True)
                  if ids != loaded.tokenizer(t).input_ids]
    assert not mismatched, mismatched[:3]


def test_the_word_cache_stays_bounded(tiny_clip, monkeypatch):
    monkeypatch.setattr(clip_words, "MAX_CACHED_WORDS", 50)
    tokenize = TextTokenizer(tiny_clip.tokenizer, tiny_clip.context_length)
    words = tokenize._words
    for n in range(300):
        text = f"made up word{n:x}"
        assert words.ids(text) == tiny_clip.tokenizer(text).input_ids
        assert len(words._cache) <= 50
    words.ids("q" * 49)
    assert "q" * 49 not in words._cache  # long pieces are worked out each time


def test_only_clip_tokenizers_take_the_word_cache(tmp_path, tiny_clip):
    assert TextTokenizer(tiny_clip.tokenizer, 77)._words is not None
    loaded = load_model(save_siglip_published(tmp_path / "model"), "cpu", "fp32")
    assert TextTokenizer(loaded.tokenizer, loaded.context_length)._words is None
