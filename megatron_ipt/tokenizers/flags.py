"""The tokenizer flags every tool declares (`add_tokenizer_args`, Megatron-LM's names), and Megatron-LM flags that
are known but refused with the reason (`add_refused_arg`)."""

from __future__ import annotations

import argparse
from typing import Sequence

from megatron_ipt.tokenizers.null import NULL_TYPES
from megatron_ipt.tokenizers.spec import TOKENIZER_TYPES
from megatron_ipt.tokenizers.tiktoken import TIKTOKEN_PATTERNS


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
    title: str = "tokenizer",
    model_help: str = "SentencePiece .model, tokenizer.json (or its directory), or an OpenAI .tiktoken file",
    model_aliases: Sequence[str] = (),
    null_tokenizer: bool = False,
):
    """Declare the tokenizer flags (Megatron-LM's names) on `parser`, in a group of their own; returns the group.
    `required`: a tokenizer must be given, --tokenizer-model or (GPT2BPETokenizer) --vocab-file (else the tokenizer
    is optional and `from_args` may return None). --tokenizer-type has no default in any tool (Megatron-LM's has
    none either): `TokenizerSpec.from_args` infers it only where the files given leave one choice, saying so in a
    `note:` line, and otherwise stops asking for it. `model_aliases`: other option strings for --tokenizer-model
    that a tool documented before (synthesize's `--tokenizer`). `null_tokenizer`: the tool takes NullTokenizer
    (pre-tokenized text: token ids), which needs a `--vocab-size` flag the tool declares itself; elsewhere naming it
    is a one-line parse error saying where it belongs."""
    g = parser.add_argument_group(title)
    type_default = (
        " (no default: without it the type is inferred only where the files leave one choice, said in a note: "
        "--vocab-file + --merge-file is GPT2BPETokenizer, a .tiktoken file TiktokenFileTokenizer, a directory or "
        ".json file HuggingFaceTokenizer, a file that loads as a SentencePiece model SentencePieceTokenizer; "
        "anything else asks for it)"
    )

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
        default=None,
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
