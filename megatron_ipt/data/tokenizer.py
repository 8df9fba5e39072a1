"""SentencePiece and Hugging Face tokenizers behind one small batch-first interface.

Megatron-LM's `--tokenizer-type` names are accepted. The semantics follow megatron-core's current
tokenizer library, so the ids we write are the ids Megatron-LM would write:

- SentencePiece types (`SentencePieceTokenizer`, `GPTSentencePieceTokenizer`, and the aliases
  `Llama2Tokenizer`, `MistralTokenizer`): plain `encode` of the text, no BOS; EOD is the model's `</s>`.
- `HuggingFaceTokenizer` (alias `Llama3Tokenizer`): a `tokenizer.json` (or a directory holding one), encoded
  with the tokenizer's special tokens (e.g. Llama's BOS) unless `include_special_tokens=False`
  (Megatron's `--tokenizer-hf-no-include-special-tokens`); EOD is `eos_token` from `tokenizer_config.json`.
- `TiktokenFileTokenizer`: an OpenAI `.tiktoken` ranks file (ids = ranks), encoded like tiktoken's
  `encode_ordinary` with the cl100k regex (or Llama-3's, `tiktoken_pattern="llama3"`). Not Megatron's
  `TikTokenizer`, which reads a different (JSON) vocabulary and shifts ids by its special tokens.
- `GPT2BPETokenizer`: GPT-2's byte-level BPE from a `vocab.json` + `merges.txt` pair (`--vocab-file`,
  `--merge-file`), encoded as megatron-core does (Hugging Face's GPT-2 tokenizer over those two files: GPT-2's
  regex, no prefix space, `<|endoftext|>` recognised as the special token it is and used as EOD).
- `NullTokenizer`: pre-tokenized text, as Megatron-LM's: a document's text is its token ids, decimal integers
  separated by whitespace; `--vocab-size N` takes ids 0..N-1, N is the EOD, so the vocabulary has N + 1 ids. No
  files; for --mock-data benchmarks and data tokenized elsewhere.

Batch encoding is the point. SentencePiece BPE models (Llama-2, Mistral, InstructLM) and byte-level BPE models
(Llama-3- and GPT-2-style tokenizer.json, GPT-2's vocab.json + merges.txt, cl100k tiktoken files) are encoded by our own native encoders (csrc/), id-exact
with the libraries and several times faster; models they do not reproduce exactly (unigram, NFKC
normalization, other regexes, ...) use the library, and one log line says so.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import shlex
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

SENTENCEPIECE_TYPES = ("SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer", "MistralTokenizer")
HUGGINGFACE_TYPES = ("HuggingFaceTokenizer", "Llama3Tokenizer")
TIKTOKEN_TYPES = ("TiktokenFileTokenizer",)
GPT2_TYPES = ("GPT2BPETokenizer",)  # a vocab.json + merges.txt pair (--vocab-file, --merge-file)
NULL_TYPES = ("NullTokenizer",)  # pre-tokenized text: token ids as decimal integers (--vocab-size, no files)
TOKENIZER_TYPES = SENTENCEPIECE_TYPES + HUGGINGFACE_TYPES + TIKTOKEN_TYPES + GPT2_TYPES + NULL_TYPES
GPT2_EOD = "<|endoftext|>"
TIKTOKEN_PATTERNS = ("cl100k", "llama3")  # TiktokenFileTokenizer's pre-tokenization regexes

# `org/name`: what a Hugging Face hub model id looks like (e.g. meta-llama/Meta-Llama-3-8B).
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

# Tried in order when a tokenizer.json comes without a tokenizer_config.json naming its eos_token.
_COMMON_EOS_TOKENS = ("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<|im_end|>")


def flatten(ids: Sequence[Sequence[int]]) -> Tuple[np.ndarray, np.ndarray]:
    """Token lists -> (tokens back to back as int64, one int64 length per list), without an intermediate list."""
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    return tokens, lengths


class Tokenizer:
    """What the pipeline needs from a tokenizer. `eod`/`bos` are None when the model has no such token."""

    tokenizer_type: str
    model_path: str
    vocab_size: int
    eod: Optional[int]
    bos: Optional[int]
    library_name: str  # the library used where the native encoder is not
    native: bool = False  # True when our native encoder does the work

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        raise NotImplementedError

    def encode(self, text: str) -> List[int]:
        return self.encode_batch([text])[0]

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def encode_batch_flat(self, texts: Sequence[str], append_id: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(tokens back to back, one length per text); `append_id` ends every non-empty text. What the packer
        feeds the native builder: native encoders produce it without any Python list."""
        ids = self.encode_batch(texts)
        if append_id is not None:
            for sequence in ids:
                if sequence:
                    sequence.append(append_id)
        return flatten(ids)

    @property
    def unique_identifiers(self) -> dict:
        """What megatron.core.datasets hashes into its index-cache names."""
        return {"class": type(self).__name__, "tokenizer_type": self.tokenizer_type, "tokenizer_path": self.model_path}


class SentencePieceTokenizer(Tokenizer):
    library_name = "sentencepiece"

    def __init__(
        self, model_path: str, tokenizer_type: str = "SentencePieceTokenizer", num_threads: int = 1, native: bool = True
    ):
        import sentencepiece

        from megatron_ipt import _native

        self.tokenizer_type = tokenizer_type
        self.model_path = model_path
        self.num_threads = num_threads
        self._sp = sentencepiece.SentencePieceProcessor(model_file=model_path)
        self.vocab_size = self._sp.get_piece_size()
        self.eod = _valid_id(self._sp.eos_id())
        self.bos = _valid_id(self._sp.bos_id())
        self._native = None
        if native:
            try:
                self._native = _native.SentencePieceBPE(model_path)
            except ValueError as e:  # "unsupported: <why>"
                logger.warning("%s: native encoder not used (%s); using the sentencepiece library", model_path, e)

    @property
    def native(self) -> bool:
        return self._native is not None

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        if self._native is not None:
            return self._native.encode(texts, self.num_threads)
        return self._sp.encode(list(texts), out_type=int, num_threads=self.num_threads)

    def encode_batch_flat(self, texts: Sequence[str], append_id: Optional[int] = None):
        if self._native is None:
            return super().encode_batch_flat(texts, append_id)
        return self._native.encode_flat(texts, self.num_threads, -1 if append_id is None else append_id)

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])


class _ByteLevelNative(Tokenizer):
    """Shared by the byte-level types: the native encoder where it is exact, the library for the rest."""

    _native = None
    num_threads = 1

    def _use_native(self, encoder, reason: Optional[str]):
        self._native = encoder
        if encoder is None:
            logger.warning(
                "%s: native encoder not used (%s); using the %s library", self.model_path, reason, self.library_name
            )

    @property
    def native(self) -> bool:
        return self._native is not None

    def _library_encode(self, text: str) -> List[int]:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        if self._native is None:
            return [self._library_encode(t) for t in texts]
        tokens, lengths = self.encode_batch_flat(texts)
        return [chunk.tolist() for chunk in np.split(tokens, np.cumsum(lengths)[:-1])] if len(texts) else []

    def encode_batch_flat(self, texts: Sequence[str], append_id: Optional[int] = None):
        if self._native is None:
            return super().encode_batch_flat(texts, append_id)
        from megatron_ipt.data.bytelevel import fill_fallbacks

        append = -1 if append_id is None else append_id
        try:
            tokens, lengths = self._native.encode_flat(texts, self.num_threads, append)
        except UnicodeEncodeError:
            # A lone surrogate is not text: leave such texts to the library, which repairs (tiktoken) or
            # rejects (tokenizers) them in its own way.
            texts = list(texts)
            good = [i for i, t in enumerate(texts) if _is_utf8_encodable(t)]
            tokens, good_lengths = self._native.encode_flat([texts[i] for i in good], self.num_threads, append)
            lengths = np.full(len(texts), -1, dtype=np.int64)
            lengths[good] = good_lengths
        return fill_fallbacks(tokens, lengths, texts, self._library_encode, append_id)


class HuggingFaceTokenizer(_ByteLevelNative):
    library_name = "tokenizers"

    def __init__(
        self,
        model_path: str,
        tokenizer_type: str = "HuggingFaceTokenizer",
        include_special_tokens: bool = True,
        num_threads: int = 1,
        native: bool = True,
    ):
        import tokenizers

        from megatron_ipt.data.bytelevel import native_from_tokenizer_json

        json_path = os.path.join(model_path, "tokenizer.json") if os.path.isdir(model_path) else model_path
        if not os.path.isfile(json_path):
            raise FileNotFoundError(
                f"{json_path}: no tokenizer.json (HuggingFaceTokenizer needs a tokenizer.json or a directory holding one)"
            )
        self.tokenizer_type = tokenizer_type
        self.model_path = model_path
        self.include_special_tokens = include_special_tokens
        try:
            self._tok = tokenizers.Tokenizer.from_file(json_path)
        except Exception as e:  # the library's own message ("stream did not contain valid UTF-8", ...) names no file
            if _is_sentencepiece_model(json_path):  # what Megatron-LM's docs give HuggingFaceTokenizer
                raise ValueError(
                    f"--tokenizer-model {json_path} is a SentencePiece model, not a tokenizer.json: give it with "
                    f"--tokenizer-type SentencePieceTokenizer (or Llama2Tokenizer/MistralTokenizer: the same ids), or "
                    f"give HuggingFaceTokenizer the model's Hugging Face directory (the one holding tokenizer.json)"
                ) from None
            raise ValueError(
                f"--tokenizer-model {json_path}: not a tokenizer.json the tokenizers library reads ({e})"
            ) from None
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        config = _read_tokenizer_config(os.path.dirname(os.path.abspath(json_path)))
        self.eod = self._token_id(config.get("eos_token"), _COMMON_EOS_TOKENS)
        self.bos = self._token_id(config.get("bos_token"), ("<s>", "<|begin_of_text|>", "<bos>"))
        self.num_threads = num_threads
        if native:
            with open(json_path, encoding="utf-8") as f:
                self._use_native(*native_from_tokenizer_json(json.load(f), self._tok, include_special_tokens))

    def _token_id(self, configured, fallbacks) -> Optional[int]:
        if isinstance(configured, dict):  # {"content": "</s>", ...} in older tokenizer_config.json files
            configured = configured.get("content")
        for token in [configured] if configured else list(fallbacks):
            token_id = self._tok.token_to_id(token)
            if token_id is not None:
                return token_id
        return None

    def _library_encode(self, text: str) -> List[int]:
        return self._tok.encode(text, add_special_tokens=self.include_special_tokens).ids

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        if self._native is not None:
            return super().encode_batch(texts)
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=self.include_special_tokens)
        return [e.ids for e in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def special_ids_of_empty_text(self) -> List[int]:
        """What the tokenizer's special tokens make of an empty text (e.g. Llama-3's BOS), whatever
        include_special_tokens says: what encoding with them puts around every document."""
        return self._tok.encode("", add_special_tokens=True).ids

    @property
    def unique_identifiers(self) -> dict:
        return {**super().unique_identifiers, "include_special_tokens": self.include_special_tokens}


class TiktokenFileTokenizer(_ByteLevelNative):
    library_name = "tiktoken"

    def __init__(
        self,
        model_path: str,
        tokenizer_type: str = "TiktokenFileTokenizer",
        tiktoken_pattern: str = "cl100k",
        num_threads: int = 1,
        native: bool = True,
    ):
        from megatron_ipt.data import bytelevel

        patterns = {"cl100k": bytelevel.CL100K_POSSESSIVE_PATTERN, "llama3": bytelevel.LLAMA3_PATTERN}
        if tiktoken_pattern not in patterns:
            raise ValueError(f"tiktoken pattern {tiktoken_pattern!r}: choose one of {', '.join(patterns)}")
        self.tokenizer_type, self.model_path, self.num_threads = tokenizer_type, model_path, num_threads
        self.tiktoken_pattern = tiktoken_pattern
        self._ranks = bytelevel.read_tiktoken_file(model_path)
        specials = bytelevel.CL100K_SPECIAL_TOKENS if len(self._ranks) == 100256 else {}
        self.vocab_size = max([*self._ranks.values(), *specials.values()]) + 1
        self.eod, self.bos = specials.get("<|endoftext|>"), None
        self._specials, self._pattern, self._library = specials, patterns[tiktoken_pattern], None
        if native:
            self._use_native(*bytelevel.native_from_tiktoken(self._ranks, self._pattern))

    def _encoding(self):
        if self._library is None:
            import tiktoken

            self._library = tiktoken.Encoding(
                "megatron_ipt_" + os.path.basename(self.model_path),
                pat_str=self._pattern,
                mergeable_ranks=self._ranks,
                special_tokens=self._specials,
            )
        return self._library

    def _library_encode(self, text: str) -> List[int]:
        return self._encoding().encode_ordinary(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._encoding().decode([int(i) for i in ids])

    @property
    def unique_identifiers(self) -> dict:
        return {**super().unique_identifiers, "tiktoken_pattern": self.tiktoken_pattern}


class GPT2BPETokenizer(_ByteLevelNative):
    """GPT-2's byte-level BPE from `vocab.json` + `merges.txt`, as megatron-core encodes it (Hugging Face's GPT-2
    tokenizer over the two files), by our native encoder (GPT-2's regex and tokenizers' merge rule); texts holding
    `<|endoftext|>` go to the library, which splits the special token out."""

    library_name = "tokenizers"

    def __init__(
        self,
        vocab_file: str,
        merge_file: str,
        tokenizer_type: str = "GPT2BPETokenizer",
        num_threads: int = 1,
        native: bool = True,
    ):
        import tokenizers
        from tokenizers import decoders, models, pre_tokenizers

        for flag, path in (("--vocab-file", vocab_file), ("--merge-file", merge_file)):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{flag} {path}: no such file")
        try:
            bpe = models.BPE.from_file(vocab_file, merge_file)
        except Exception as e:
            raise ValueError(
                f"--vocab-file {vocab_file} / --merge-file {merge_file}: not a GPT-2 vocab.json + merges.txt pair ({e})"
            ) from None
        self.tokenizer_type, self.model_path, self.merge_file = tokenizer_type, vocab_file, merge_file
        self.num_threads = num_threads
        self._tok = tokenizers.Tokenizer(bpe)
        # GPT-2's pre-tokenization: its own regex over the text as is (no prefix space), bytes mapped to characters.
        self._tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        self._tok.decoder = decoders.ByteLevel()
        self.eod = self._tok.token_to_id(GPT2_EOD)
        if self.eod is not None:  # a special token, as in Hugging Face's GPT-2 tokenizer: matched whole in text
            self._tok.add_special_tokens([GPT2_EOD])
        self.bos = None
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        if native:
            from megatron_ipt.data.bytelevel import native_from_tokenizer_json

            # The library's own tokenizer.json of the two files: the same reader as HuggingFaceTokenizer's.
            self._use_native(*native_from_tokenizer_json(json.loads(self._tok.to_str()), self._tok, False))

    def _library_encode(self, text: str) -> List[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        if self._native is not None:
            return super().encode_batch(texts)
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    @property
    def unique_identifiers(self) -> dict:
        return {**super().unique_identifiers, "merge_file": self.merge_file}


class NullTokenizer(Tokenizer):
    """Megatron-LM's NullTokenizer: the text is the token ids, decimal integers separated by whitespace. `vocab_size`
    is Megatron's --vocab-size (the ids before EOD): ids 0..vocab_size-1 are the text's, vocab_size is the EOD, so
    the tokenizer's vocabulary has vocab_size + 1 ids (padded like any other by --make-vocab-size-divisible-by).
    Where Megatron-LM trusts the text (int() of each space-separated word, any value), an id the model could not
    embed is an error here, naming it."""

    library_name = "built-in"  # no library: the ids are parsed here (Megatron's metadata names it "null")

    def __init__(self, vocab_size: int, tokenizer_type: str = "NullTokenizer"):
        if vocab_size < 1:
            raise ValueError(f"--vocab-size {vocab_size}: NullTokenizer needs a positive vocabulary size")
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


def build_tokenizer(
    tokenizer_type: str,
    tokenizer_model: str,
    *,
    num_threads: int = 1,
    include_special_tokens: bool = True,
    native: bool = True,
    tiktoken_pattern: str = "cl100k",
    merge_file: Optional[str] = None,
    vocab_size: Optional[int] = None,
) -> Tokenizer:
    """Build a tokenizer from Megatron's `--tokenizer-type` and `--tokenizer-model` values (GPT2BPETokenizer:
    `tokenizer_model` is the vocab.json and `merge_file` the merges.txt; NullTokenizer: no model, `vocab_size` is
    Megatron's --vocab-size)."""
    if tokenizer_type in NULL_TYPES:
        if tokenizer_model:
            raise ValueError(f"--tokenizer-type {tokenizer_type} reads no tokenizer file (got {tokenizer_model})")
        if vocab_size is None:
            raise ValueError(f"--tokenizer-type {tokenizer_type} needs --vocab-size")
        return NullTokenizer(vocab_size, tokenizer_type)
    if tokenizer_type in GPT2_TYPES:
        if not tokenizer_model or not merge_file:
            raise ValueError(f"--tokenizer-type {tokenizer_type} needs --vocab-file and --merge-file")
        return GPT2BPETokenizer(tokenizer_model, merge_file, tokenizer_type, num_threads=num_threads, native=native)
    if not tokenizer_model:
        raise ValueError(f"--tokenizer-model is required for --tokenizer-type {tokenizer_type}")
    if not os.path.exists(tokenizer_model):
        if tokenizer_type in HUGGINGFACE_TYPES and _HUB_NAME.fullmatch(tokenizer_model):
            raise FileNotFoundError(
                f"--tokenizer-model {tokenizer_model}: no such file or directory. If it names a Hugging Face hub "
                f"model: no hub is reachable from here; download the model's tokenizer files (tokenizer.json, "
                f"tokenizer_config.json) where there is network access and pass their local directory"
            )
        raise FileNotFoundError(f"--tokenizer-model {tokenizer_model}: no such file or directory")
    if tokenizer_type in SENTENCEPIECE_TYPES:
        return SentencePieceTokenizer(tokenizer_model, tokenizer_type, num_threads=num_threads, native=native)
    if tokenizer_type in HUGGINGFACE_TYPES:
        return HuggingFaceTokenizer(
            tokenizer_model,
            tokenizer_type,
            include_special_tokens=include_special_tokens,
            num_threads=num_threads,
            native=native,
        )
    if tokenizer_type in TIKTOKEN_TYPES:
        return TiktokenFileTokenizer(
            tokenizer_model, tokenizer_type, tiktoken_pattern=tiktoken_pattern, num_threads=num_threads, native=native
        )
    raise ValueError(f"unsupported --tokenizer-type {tokenizer_type!r}; choose one of: {', '.join(TOKENIZER_TYPES)}")


# Megatron-LM's tokenizer metadata names a library; the one each of our types is.
METADATA_LIBRARIES = {
    **{t: "sentencepiece" for t in SENTENCEPIECE_TYPES},
    **{t: "huggingface" for t in HUGGINGFACE_TYPES},
    **{t: "tiktoken" for t in TIKTOKEN_TYPES},
    **{t: "megatron" for t in GPT2_TYPES},
    **{t: "null" for t in NULL_TYPES},
}


@dataclass(frozen=True)
class TokenizerSpec:
    """Which tokenizer a tool uses, as Megatron's flags name it (`add_tokenizer_args`); `build()` makes it.

    The one description every tool shares: preprocess_data, build_corpus, pretrain, synthesize and evaluate all
    declare their tokenizer flags through `add_tokenizer_args` and read them back with `from_args`.
    GPT2BPETokenizer: `model` is the vocab.json (--vocab-file) and `merge_file` the merges.txt (--merge-file).
    NullTokenizer: no `model` (None); `vocab_size` is Megatron's --vocab-size, the ids before its EOD."""

    type: str
    model: Optional[str]
    include_special_tokens: bool = True  # --tokenizer-hf-no-include-special-tokens turns it off
    tiktoken_pattern: str = "cl100k"  # --tiktoken-file-pattern
    native: bool = True  # --no-native-tokenizer turns it off
    merge_file: Optional[str] = None  # --merge-file (GPT2BPETokenizer)
    # The vocabulary the ids must fit (preprocess_data's --vocab-size; training has its own model --vocab-size).
    vocab_size: Optional[int] = None

    @staticmethod
    def infer_type(model: str) -> str:
        """The type a bare tokenizer path implies: a tokenizer.json or an HF directory, a .tiktoken file, else a
        SentencePiece model (for flags that name only a path, e.g. synthesize's `--tokenizer`)."""
        if os.path.isdir(model) or model.endswith(".json"):
            return "HuggingFaceTokenizer"
        if model.endswith(".tiktoken"):
            return "TiktokenFileTokenizer"
        return "SentencePieceTokenizer"

    @classmethod
    def from_args(cls, args) -> Optional["TokenizerSpec"]:
        """The spec the parsed flags of `add_tokenizer_args` describe; None when no model was given (tools where the
        tokenizer is optional). A missing type is inferred from the model path. Flags that contradict each other
        stop the tool with a one-line message (SystemExit, as argparse does)."""
        if args.tokenizer_type in NULL_TYPES:
            return cls._null_from_args(args)
        vocab_file, merge_file = getattr(args, "vocab_file", None), getattr(args, "merge_file", None)
        if vocab_file or merge_file:
            if args.tokenizer_type not in GPT2_TYPES:
                raise SystemExit(
                    f"error: --vocab-file/--merge-file are read by --tokenizer-type GPT2BPETokenizer only "
                    f"(got --tokenizer-type {args.tokenizer_type})"
                )
            if not (vocab_file and merge_file):
                raise SystemExit("error: --tokenizer-type GPT2BPETokenizer needs both --vocab-file and --merge-file")
            model = vocab_file
        elif args.tokenizer_type in GPT2_TYPES:
            raise SystemExit(
                "error: --tokenizer-type GPT2BPETokenizer reads --vocab-file (GPT-2's vocab.json) and --merge-file "
                "(its merges.txt), not --tokenizer-model"
            )
        else:
            model = args.tokenizer_model
        if not model:
            return None
        spec = cls(
            type=args.tokenizer_type or cls.infer_type(model),
            model=model,
            include_special_tokens=not args.tokenizer_hf_no_include_special_tokens,
            tiktoken_pattern=args.tiktoken_file_pattern,
            native=not args.no_native_tokenizer,
            merge_file=merge_file,
        )
        if getattr(args, "tokenizer_metadata", None):
            spec.check_metadata(args.tokenizer_metadata)
        return spec

    @classmethod
    def _null_from_args(cls, args) -> "TokenizerSpec":
        """NullTokenizer's flags: --vocab-size (the tool's own flag: preprocess_data's, or the model's in training),
        and no tokenizer files."""
        given = [flag for flag in ("tokenizer_model", "vocab_file", "merge_file") if getattr(args, flag, None)]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise SystemExit(
                f"error: --tokenizer-type {args.tokenizer_type} reads no tokenizer file (the text is the token ids): "
                f"drop {flag} {getattr(args, given[0])}"
            )
        vocab_size = getattr(args, "vocab_size", None)
        if vocab_size is None:
            raise SystemExit(
                f"error: --tokenizer-type {args.tokenizer_type} needs --vocab-size N (token ids 0..N-1; N is the "
                "end-of-document id)"
            )
        if vocab_size < 1:
            raise SystemExit(f"error: --vocab-size {vocab_size}: --tokenizer-type {args.tokenizer_type} needs N >= 1")
        spec = cls(type=args.tokenizer_type, model=None, native=not args.no_native_tokenizer, vocab_size=vocab_size)
        if getattr(args, "tokenizer_metadata", None):
            spec.check_metadata(args.tokenizer_metadata)
        return spec

    def check_metadata(self, path: str) -> None:
        """Megatron-LM's `--tokenizer-metadata` JSON: the library it names must be the one this type uses (the type
        already decides everything else the file could say, so nothing more is read from it)."""
        try:
            with open(path, encoding="utf-8") as f:
                metadata = json.load(f)
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: --tokenizer-metadata {path}: cannot read it as JSON ({e})") from None
        library = metadata.get("library") if isinstance(metadata, dict) else None
        if library is not None and library != METADATA_LIBRARIES[self.type]:
            raise SystemExit(
                f"error: --tokenizer-metadata {path} names library {library!r}, but --tokenizer-type {self.type} is "
                f"the {METADATA_LIBRARIES[self.type]!r} library"
            )

    def to_flags(self) -> str:
        """The flags that give this spec back (`from_args`), for commands a tool prints for the user to run next.
        Flags at their default are left out; the pattern is named only for the type that reads it."""
        if self.type in GPT2_TYPES:
            flags = (
                f"--tokenizer-type {self.type} --vocab-file {shlex.quote(self.model)} "
                f"--merge-file {shlex.quote(self.merge_file or '')}"
            )
        elif self.type in NULL_TYPES:
            flags = f"--tokenizer-type {self.type}"  # and --vocab-size, below
        else:
            flags = f"--tokenizer-type {self.type} --tokenizer-model {shlex.quote(self.model)}"
        if not self.include_special_tokens:
            flags += " --tokenizer-hf-no-include-special-tokens"
        if self.type in TIKTOKEN_TYPES:
            flags += f" --tiktoken-file-pattern {self.tiktoken_pattern}"
        if not self.native:
            flags += " --no-native-tokenizer"
        if self.vocab_size is not None:
            flags += f" --vocab-size {self.vocab_size}"
        return flags

    def build(self, num_threads: int = 1) -> Tokenizer:
        tokenizer = build_tokenizer(
            self.type,
            self.model,
            num_threads=num_threads,
            include_special_tokens=self.include_special_tokens,
            native=self.native,
            tiktoken_pattern=self.tiktoken_pattern,
            merge_file=self.merge_file,
            vocab_size=self.vocab_size,
        )
        # NullTokenizer's vocab_size is the ids before its EOD: its ids fit by construction
        if self.vocab_size is not None and tokenizer.vocab_size > self.vocab_size and self.type not in NULL_TYPES:
            raise ValueError(
                f"--vocab-size {self.vocab_size}: the tokenizer {self.model} has {tokenizer.vocab_size} tokens; "
                f"its ids would not fit a vocabulary of {self.vocab_size}"
            )
        return tokenizer


class _Refused(argparse.Action):
    """A Megatron-LM flag this stack knows but does not do: stop at parse time with the reason and the way instead."""

    def __init__(self, option_strings, dest, reason: str, nargs=0, **kwargs):
        self.reason = reason
        kwargs["help"] = kwargs.get("help") or f"refused: {reason}"
        super().__init__(option_strings, dest, nargs=nargs, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is not supported: {self.reason}")


def add_refused_arg(group, *flags: str, reason: str, takes_value: bool = False) -> None:
    """Declare Megatron-LM flags that are refused with `reason` (listed in --help, never a generic argparse error)."""
    group.add_argument(*flags, action=_Refused, reason=reason, nargs=None if takes_value else 0, default=None)


def add_tokenizer_args(
    parser,
    *,
    required: bool = True,
    default_type: Optional[str] = None,
    title: str = "tokenizer",
    model_help: str = "SentencePiece .model, tokenizer.json (or its directory), or an OpenAI .tiktoken file",
    model_aliases: Sequence[str] = (),
    null_tokenizer: bool = False,
):
    """Declare the tokenizer flags (Megatron-LM's names) on `parser`, in a group of their own; returns the group.
    `required`: a tokenizer must be given, --tokenizer-model or (GPT2BPETokenizer) --vocab-file (else the tokenizer
    is optional and `from_args` may return None). `default_type`: --tokenizer-type when not given (None: required
    with the model, or inferred from its path when the tokenizer is optional). `model_aliases`: other option strings
    for --tokenizer-model that a tool documented before (synthesize's `--tokenizer`). `null_tokenizer`: the tool
    takes NullTokenizer (pre-tokenized text: token ids), which needs a `--vocab-size` flag the tool declares itself;
    elsewhere naming it is a one-line parse error saying where it belongs."""
    g = parser.add_argument_group(title)
    if default_type:
        type_default = f" (default: {default_type})"
    elif not required:
        type_default = (
            " (default: inferred from the model path: a .json file or a directory is HuggingFaceTokenizer, "
            "a .tiktoken file TiktokenFileTokenizer, anything else SentencePieceTokenizer)"
        )
    else:
        type_default = ""

    def tokenizer_type(value: str) -> str:
        if value in NULL_TYPES and not null_tokenizer:
            raise argparse.ArgumentTypeError(
                f"{value} is not for this tool: its text is token ids (pre-tokenized data), and this tool works on "
                "text; NullTokenizer is for tools/preprocess_data.py and tools/pretrain.py"
            )
        return value

    g.add_argument(
        "--tokenizer-type",
        type=tokenizer_type,
        choices=TOKENIZER_TYPES if null_tokenizer else tuple(t for t in TOKENIZER_TYPES if t not in NULL_TYPES),
        default=default_type,
        required=required and default_type is None,
        help="Megatron-LM's tokenizer type"
        + type_default
        + (
            "; NullTokenizer: the text is token ids separated by whitespace, below --vocab-size"
            if null_tokenizer
            else ""
        ),
    )
    # One of the two names the tokenizer's files: argparse says so when neither is given to a tool that needs one.
    # (NullTokenizer names no file: a tool taking it checks for the files itself, after parsing)
    model_or_vocab = g.add_mutually_exclusive_group(required=required and not null_tokenizer)
    model_or_vocab.add_argument(
        "--tokenizer-model", *model_aliases, dest="tokenizer_model", default=None, help=model_help
    )
    model_or_vocab.add_argument(
        "--vocab-file", default=None, help="GPT2BPETokenizer: GPT-2's vocab.json (with --merge-file)"
    )
    g.add_argument("--merge-file", default=None, help="GPT2BPETokenizer: GPT-2's merges.txt (with --vocab-file)")
    g.add_argument(
        "--tokenizer-hf-no-include-special-tokens",
        action="store_true",
        help="HF tokenizers: do not add special tokens (e.g. BOS) to each document",
    )
    g.add_argument(
        "--tiktoken-file-pattern",
        choices=TIKTOKEN_PATTERNS,
        default="cl100k",
        help="TiktokenFileTokenizer: the pre-tokenization regex (cl100k_base's, or Llama-3's)",
    )
    g.add_argument(
        "--tokenizer-metadata",
        default=None,
        metavar="JSON",
        help="Megatron-LM's tokenizer metadata file: checked (its library must be the type's); the type decides "
        "the rest",
    )
    g.add_argument(
        "--no-native-tokenizer",
        action="store_true",
        help="use the tokenizer's library even where our native encoder applies (same ids, slower)",
    )
    # Megatron-LM's other tokenizer flags: known, with what they mean here.
    g.add_argument(
        "--tiktoken-pattern",
        choices=("v1", "v2"),
        default=None,
        help="accepted for Megatron-LM compatibility, no effect: it picks the regex of Megatron's TikTokenizer "
        "(JSON vocabularies), which is not offered here, and every other type ignores it, as in Megatron-LM; "
        "an OpenAI .tiktoken file is TiktokenFileTokenizer with --tiktoken-file-pattern",
    )
    g.add_argument(
        "--tiktoken-num-special-tokens",
        type=int,
        default=None,
        help="accepted for Megatron-LM compatibility, no effect: read by Megatron's TikTokenizer only (see "
        "--tiktoken-pattern)",
    )
    g.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="accepted for Megatron-LM compatibility, no effect: no tokenizer code is ever run here (tokenizer.json, "
        ".model and .tiktoken files are data)",
    )
    g.add_argument(
        "--use-gigatoken",
        action="store_true",
        help="accepted for Megatron-LM compatibility: it asks for a fast native tokenizer, and our native encoders "
        "are that, on by default (C++, id-exact with the reference libraries on every family, GPT-2-style "
        "tokenizers included, bounded caches); GigaToken itself is never used. Contradicts --no-native-tokenizer",
    )
    add_refused_arg(
        g,
        "--tokenizer-special-tokens",
        takes_value=True,
        reason="extra special tokens are not added at run time: add them to the tokenizer's own files "
        "(tokenizer.json added_tokens, or a SentencePiece model trained with them)",
    )
    add_refused_arg(
        g,
        "--tokenizer-sentencepiece-legacy",
        reason="SentencePiece models are encoded as the sentencepiece library encodes plain text, which is "
        "what Megatron-LM does without this flag",
    )
    add_refused_arg(
        g,
        "--no-tokenizer-sentencepiece-ignore-extra-whitespaces",
        "--disable-tokenizer-sentencepiece-ignore-extra-whitespaces",
        reason="whitespace is normalized as the SentencePiece model itself says (its normalizer spec)",
    )
    add_refused_arg(
        g,
        "--tokenizer-hf-no-use-fast",
        reason="tokenizer.json is read with the tokenizers library (the fast tokenizer) only",
    )
    add_refused_arg(
        g,
        "--chat-template",
        takes_value=True,
        reason="documents are encoded as given; no tool here formats conversations with a chat template",
    )
    return g


def _is_sentencepiece_model(path: str) -> bool:
    import sentencepiece

    try:
        sentencepiece.SentencePieceProcessor(model_file=path)
        return True
    except Exception:
        return False


def _is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _valid_id(token_id: int) -> Optional[int]:
    return token_id if token_id >= 0 else None


def _read_tokenizer_config(directory: str) -> dict:
    path = os.path.join(directory, "tokenizer_config.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)
