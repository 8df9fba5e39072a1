"""Which tokenizer a tool uses (`TokenizerSpec`, read back from `flags.add_tokenizer_args`' flags), Megatron-LM's
`--tokenizer-type` names, and `build_tokenizer`, which makes the tokenizer a type names."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from dataclasses import dataclass
from typing import Optional

from megatron_ipt.errors import ConfigError
from megatron_ipt.tokenizers.base import Tokenizer, TokenizerFileError
from megatron_ipt.tokenizers.gpt2 import GPT2_TYPES, GPT2BPETokenizer
from megatron_ipt.tokenizers.huggingface import HUGGINGFACE_TYPES, HuggingFaceTokenizer
from megatron_ipt.tokenizers.null import NULL_TYPES, NullTokenizer
from megatron_ipt.tokenizers.sentencepiece import SENTENCEPIECE_TYPES, SentencePieceTokenizer, is_sentencepiece_model
from megatron_ipt.tokenizers.tiktoken import TIKTOKEN_TYPES, TiktokenFileTokenizer

TOKENIZER_TYPES = SENTENCEPIECE_TYPES + HUGGINGFACE_TYPES + TIKTOKEN_TYPES + GPT2_TYPES + NULL_TYPES

# `org/name`: what a Hugging Face hub model id looks like (e.g. meta-llama/Meta-Llama-3-8B).
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


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
    if os.path.isdir(tokenizer_model) and tokenizer_type not in HUGGINGFACE_TYPES:
        raise TokenizerFileError(
            f"--tokenizer-model {tokenizer_model}: is a directory; --tokenizer-type {tokenizer_type} reads a file "
            "(for a Hugging Face tokenizer directory give --tokenizer-type HuggingFaceTokenizer)"
        )
    if tokenizer_type in SENTENCEPIECE_TYPES:
        try:
            return SentencePieceTokenizer(tokenizer_model, tokenizer_type, num_threads=num_threads, native=native)
        except (RuntimeError, OSError) as e:  # sentencepiece's "INTERNAL: could not parse ModelProto from ..."
            why = (str(e).splitlines() or [type(e).__name__])[0].replace(f" from {tokenizer_model}", "")
            raise TokenizerFileError(
                f"--tokenizer-model {tokenizer_model}: not a SentencePiece model (corrupt or another format: {why})"
            ) from None
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
    raise ConfigError(f"unsupported --tokenizer-type {tokenizer_type!r}; choose one of: {', '.join(TOKENIZER_TYPES)}")


# What an inferred type's note adds: why the files leave no other choice.
_FAMILY_NOTES = {
    HUGGINGFACE_TYPES[0]: "a directory or .json file is a Hugging Face tokenizer; Llama3Tokenizer is the same here",
    TIKTOKEN_TYPES[0]: "a .tiktoken file",
    SENTENCEPIECE_TYPES[0]: "the file is a SentencePiece model; "
    + ", ".join(SENTENCEPIECE_TYPES[1:])
    + " are the same tokenizer here",
}
_noted = set()


def _reporting() -> bool:
    """Notes and these flag errors come from one process of a torchrun job (global rank 0), or from a plain tool."""
    return os.environ.get("RANK", "0") == "0"


def _note(message: str) -> None:
    """A start-up note on stderr, once per process (the flags are read more than once by some tools)."""
    if message not in _noted and _reporting():
        print(f"note: {message}", file=sys.stderr, flush=True)
    _noted.add(message)


def _types_for_path(model: str) -> tuple:
    """The types that could read a tokenizer file whose kind infer_type cannot tell, by its name."""
    if model.endswith(".model"):
        return SENTENCEPIECE_TYPES
    return SENTENCEPIECE_TYPES + HUGGINGFACE_TYPES + TIKTOKEN_TYPES


def _unknown_kind(model: str) -> str:
    """Why infer_type could not tell a tokenizer file's kind."""
    if not os.path.exists(model):
        return "no such file"
    return "it does not load as a SentencePiece model and its name says no other kind"


def _ask_type(given: str, choices, why: str = "") -> None:
    """Stop: the files given leave more than one type (or none we can tell); name the ones that fit. Exit status 2,
    as argparse's flag errors."""
    if _reporting():
        print(
            f"error: {given}: give --tokenizer-type (no type is assumed{'; ' + why if why else ''}; for these files: "
            f"{', '.join(choices)})",
            file=sys.stderr,
            flush=True,
        )
    raise SystemExit(2)


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
    def infer_type(model: str) -> Optional[str]:
        """The type a bare tokenizer path leaves no choice about, or None: a directory or a .json file is
        HuggingFaceTokenizer, a .tiktoken file TiktokenFileTokenizer, a file that loads as a SentencePiece model
        SentencePieceTokenizer (each family's other names are the same tokenizer here: Llama3Tokenizer;
        GPTSentencePieceTokenizer, Llama2Tokenizer, MistralTokenizer). Anything else (a missing file, one of
        another kind) is None: no type is assumed."""
        if os.path.isdir(model) or model.endswith(".json"):
            return HUGGINGFACE_TYPES[0]
        if model.endswith(".tiktoken"):
            return TIKTOKEN_TYPES[0]
        if os.path.isfile(model) and is_sentencepiece_model(model):
            return SENTENCEPIECE_TYPES[0]
        return None

    @classmethod
    def from_args(cls, args) -> Optional["TokenizerSpec"]:
        """The spec the parsed flags of `add_tokenizer_args` describe; None when no model was given (tools where the
        tokenizer is optional). A missing type is inferred only where the files leave one choice (--vocab-file +
        --merge-file, or `infer_type`), with a `note:` line on stderr; otherwise the tool stops asking for it (exit
        status 2, naming the types that fit). Flags that contradict each other stop the tool with a one-line message
        (SystemExit, as argparse does)."""
        if args.tokenizer_type in NULL_TYPES:
            return cls._null_from_args(args)
        vocab_file, merge_file = getattr(args, "vocab_file", None), getattr(args, "merge_file", None)
        tokenizer_type = args.tokenizer_type
        if tokenizer_type is None and vocab_file and merge_file:
            tokenizer_type = GPT2_TYPES[0]
            _note(f"--tokenizer-type {tokenizer_type} inferred: the only type that reads --vocab-file + --merge-file")
        if vocab_file or merge_file:
            if tokenizer_type is None:
                _ask_type(
                    f"--{'vocab' if vocab_file else 'merge'}-file without --{'merge' if vocab_file else 'vocab'}-file",
                    GPT2_TYPES,
                )
            if tokenizer_type not in GPT2_TYPES:
                raise SystemExit(
                    f"error: --vocab-file/--merge-file are read by --tokenizer-type GPT2BPETokenizer only "
                    f"(got --tokenizer-type {tokenizer_type})"
                )
            if not (vocab_file and merge_file):
                raise SystemExit("error: --tokenizer-type GPT2BPETokenizer needs both --vocab-file and --merge-file")
            model = vocab_file
        elif tokenizer_type in GPT2_TYPES:
            raise SystemExit(
                "error: --tokenizer-type GPT2BPETokenizer reads --vocab-file (GPT-2's vocab.json) and --merge-file "
                "(its merges.txt), not --tokenizer-model"
            )
        else:
            model = args.tokenizer_model
        if not model:
            return None
        if tokenizer_type is None:
            tokenizer_type = cls.infer_type(model)
            if tokenizer_type is None:
                _ask_type(f"--tokenizer-model {model}", _types_for_path(model), _unknown_kind(model))
            why = _FAMILY_NOTES[tokenizer_type]
            _note(f"--tokenizer-type {tokenizer_type} inferred from --tokenizer-model {model} ({why})")
        spec = cls(
            type=tokenizer_type,
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
            raise ConfigError(
                f"--vocab-size {self.vocab_size}: the tokenizer {self.model} has {tokenizer.vocab_size} tokens; "
                f"its ids would not fit a vocabulary of {self.vocab_size}"
            )
        return tokenizer
