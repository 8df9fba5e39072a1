"""`NullTokenizer`: pre-tokenized text, as Megatron-LM's: a document's text is its token ids, decimal integers
separated by whitespace; `--vocab-size N` takes ids 0..N-1, N is the EOD, so the vocabulary has N + 1 ids. No files;
for --mock-data benchmarks and data tokenized elsewhere."""

from __future__ import annotations

import re
from typing import List, Sequence

from megatron_ipt.errors import ConfigError
from megatron_ipt.tokenizers.base import Tokenizer

NULL_TYPES = ("NullTokenizer",)  # pre-tokenized text: token ids as decimal integers (--vocab-size, no files)


class NullTokenizer(Tokenizer):
    """Megatron-LM's NullTokenizer: the text is the token ids, decimal integers separated by whitespace. `vocab_size`
    is Megatron's --vocab-size (the ids before EOD): ids 0..vocab_size-1 are the text's, vocab_size is the EOD, so
    the tokenizer's vocabulary has vocab_size + 1 ids (padded like any other by --make-vocab-size-divisible-by).
    Where Megatron-LM trusts the text (int() of each space-separated word, any value), an id the model could not
    embed is an error here, naming it."""

    library_name = "built-in"  # no library: the ids are parsed here (Megatron's metadata names it "null")

    def __init__(self, vocab_size: int, tokenizer_type: str = "NullTokenizer"):
        if vocab_size < 1:
            raise ConfigError(f"--vocab-size {vocab_size}: NullTokenizer needs a positive vocabulary size")
        self.tokenizer_type = tokenizer_type
        self.model_path = f"{tokenizer_type} --vocab-size {vocab_size}"  # what messages name: there is no file
        self.null_vocab_size = vocab_size
        self.vocab_size = vocab_size + 1
        self.eod, self.bos = vocab_size, None

    def encode(self, text: str) -> List[int]:
        if _NULL_TEXT.fullmatch(text):  # the common case, digits and whitespace only: checked in one pass
            ids = [int(word) for word in text.split()]
            if not ids or max(ids) < self.null_vocab_size:
                return ids
        for word in text.split():  # find the word to name
            if not _NULL_DIGITS.fullmatch(word[1:] if word.startswith("-") else word):
                raise ValueError(
                    f"NullTokenizer: token {word[:40]!r} is not a decimal integer (the text must be token ids "
                    f"separated by whitespace)"
                )
            if word.startswith("-"):
                raise ValueError(f"NullTokenizer: token {word[:40]} is negative (token ids are 0 or more)")
            if len(word) > 18 or int(word) >= self.null_vocab_size:
                raise ValueError(
                    f"NullTokenizer: token {word[:40]} is outside --vocab-size {self.null_vocab_size} (ids "
                    f"0..{self.null_vocab_size - 1}; {self.null_vocab_size} is the end-of-document id)"
                )
        raise AssertionError(f"NullTokenizer: {text[:80]!r} failed a check that none of its words fails")

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(str(int(i)) for i in ids)

    @property
    def unique_identifiers(self) -> dict:
        return {"class": type(self).__name__, "tokenizer_type": self.tokenizer_type, "vocab_size": self.vocab_size}


# NullTokenizer's text: ASCII digits and whitespace (the str.split whitespace that separates the ids); one id, at
# most 18 digits (what int64 holds, and short of int()'s digit limit: a longer one is too large for any vocabulary).
_NULL_TEXT = re.compile(r"(?:\s*[0-9]{1,18}(?![0-9]))*\s*")
_NULL_DIGITS = re.compile(r"[0-9]+")
