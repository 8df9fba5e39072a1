"""Tokenizers behind one small batch-first interface: a shared layer every stage may use (synthesis' length guard,
the corpus' token counts, packing, training, evaluation).

Megatron-LM's `--tokenizer-type` names are accepted. The semantics follow megatron-core's current tokenizer library,
so the ids we write are the ids Megatron-LM would write. One module per family: `sentencepiece`, `huggingface`,
`tiktoken`, `gpt2`, `null` (pre-tokenized text); `base` is the interface, `bytelevel` bridges byte-level BPE models
to the native encoder, `spec` is the description a tool builds one from and `flags` its command-line flags.

Batch encoding is the point. SentencePiece BPE models (Llama-2, Mistral, InstructLM) and byte-level BPE models
(Llama-3- and GPT-2-style tokenizer.json, GPT-2's vocab.json + merges.txt, cl100k tiktoken files) are encoded by our
own native encoders (csrc/), id-exact with the libraries and several times faster; models they do not reproduce
exactly (unigram, NFKC normalization, other regexes, ...) use the library, and one log line says so.
"""

from megatron_ipt.tokenizers.base import Tokenizer, flatten
from megatron_ipt.tokenizers.flags import add_refused_arg, add_tokenizer_args
from megatron_ipt.tokenizers.gpt2 import GPT2_EOD, GPT2_TYPES, GPT2BPETokenizer
from megatron_ipt.tokenizers.huggingface import HUGGINGFACE_TYPES, HuggingFaceTokenizer
from megatron_ipt.tokenizers.null import NULL_TYPES, NullTokenizer
from megatron_ipt.tokenizers.sentencepiece import SENTENCEPIECE_TYPES, SentencePieceTokenizer
from megatron_ipt.tokenizers.spec import METADATA_LIBRARIES, TOKENIZER_TYPES, TokenizerSpec, build_tokenizer
from megatron_ipt.tokenizers.tiktoken import TIKTOKEN_PATTERNS, TIKTOKEN_TYPES, TiktokenFileTokenizer

__all__ = [
    "GPT2_EOD",
    "GPT2_TYPES",
    "HUGGINGFACE_TYPES",
    "METADATA_LIBRARIES",
    "NULL_TYPES",
    "SENTENCEPIECE_TYPES",
    "TIKTOKEN_PATTERNS",
    "TIKTOKEN_TYPES",
    "TOKENIZER_TYPES",
    "GPT2BPETokenizer",
    "HuggingFaceTokenizer",
    "NullTokenizer",
    "SentencePieceTokenizer",
    "TiktokenFileTokenizer",
    "Tokenizer",
    "TokenizerSpec",
    "add_refused_arg",
    "add_tokenizer_args",
    "build_tokenizer",
    "flatten",
]
