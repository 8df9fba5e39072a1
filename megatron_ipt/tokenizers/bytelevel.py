"""Byte-level BPE models (tiktoken files, Llama-3- and GPT-2-style tokenizer.json, GPT-2's vocab.json + merges.txt)
→ our native encoder, when it is exact.

`native_from_tiktoken` and `native_from_tokenizer_json` return `(encoder, None)` or `(None, reason)`; the reason
is what the one log line says when the library is used instead. Only configurations whose every step the
native encoder reproduces are accepted (csrc/bytelevel_bpe.h lists them).
"""

from __future__ import annotations

import binascii
import functools
import sys
from typing import Dict, List, Optional, Tuple

from megatron_ipt import _native
from megatron_ipt.errors import ConfigError

# Pre-tokenization regexes the native encoder implements (csrc/bytelevel_bpe.cpp), by its pattern code.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CL100K_POSSESSIVE_PATTERN = (
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"
    r"|\s++$|\s*[\r\n]|\s+(?!\S)|\s"
)
# GPT-2's regex: what the ByteLevel pre-tokenizer splits with when `use_regex` is true (GPT-2, GPT-NeoX, SmolLM2).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
PATTERNS = {LLAMA3_PATTERN: 1, CL100K_POSSESSIVE_PATTERN: 2, GPT2_PATTERN: 3}
# tiktoken's cl100k_base: the regex it ships today and its special tokens (not in the .tiktoken file).
CL100K_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


# base64 with every character checked (strict_mode is Python 3.11+; 3.10 decodes leniently)
_a2b_base64 = (
    functools.partial(binascii.a2b_base64, strict_mode=True) if sys.version_info >= (3, 11) else binascii.a2b_base64
)


def read_tiktoken_file(path: str) -> Dict[bytes, int]:
    """An OpenAI `.tiktoken` file: one `base64(token bytes) rank` per line."""
    ranks = {}
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[_a2b_base64(token)] = int(rank)
        except (ValueError, binascii.Error) as e:
            raise ConfigError(f"{path}:{number}: not a tiktoken ranks line ({e})") from None
    return ranks


def native_from_tiktoken(ranks: Dict[bytes, int], pattern: str):
    if pattern not in PATTERNS:
        return None, "its pre-tokenization regex is not one the native encoder implements"
    try:
        return _native.ByteLevelBPE(list(ranks.items()), [], PATTERNS[pattern], True, []), None
    except ValueError as e:
        return None, str(e)


def bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's byte → printable character map that byte-level tokenizer.json vocabularies are written in:
    printable Latin-1 bytes stand for themselves, the other bytes for U+0100 onwards, in byte order."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _byte_decoder():
    """A function: a byte-level token's text -> its bytes, or None when a character is not one of the 256 (one
    str.translate and one latin-1 encode per token: tokenizers with 100k+ tokens load in a fraction of a second)."""
    table = {ord(c): b for b, c in bytes_to_unicode().items()}
    for code in range(256):  # Latin-1 characters that do not stand for a byte: made unencodable
        table.setdefault(code, 0x110000 - 1)
    table = {k: chr(v) for k, v in table.items()}

    def to_bytes(text: str) -> Optional[bytes]:
        try:
            return text.translate(table).encode("latin-1")
        except UnicodeEncodeError:
            return None

    return to_bytes


def native_from_tokenizer_json(spec: dict, library, include_special_tokens: bool):
    """A `tokenizer.json` dict, and the loaded `tokenizers.Tokenizer` (to read its BOS/EOS template)."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return None, f"model type {model.get('type')!r} is not BPE"
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            return None, f"BPE option {key}={model.get(key)!r}"
    if model.get("byte_fallback"):
        return None, "BPE byte_fallback (not a byte-level vocabulary)"
    if spec.get("normalizer") is not None:
        return None, "it has a normalizer"
    pattern = _split_pattern(spec.get("pre_tokenizer"))
    if pattern not in PATTERNS:
        return None, (
            "its pre-tokenizer is neither Split(<Llama-3/cl100k regex>, Isolated) + ByteLevel(use_regex=False) nor "
            "GPT-2's ByteLevel(use_regex=True, add_prefix_space=False)"
        )
    decode = {c: b for b, c in bytes_to_unicode().items()}
    if model.get("unk_token") is not None and not all(c in model["vocab"] for c in decode):
        # tokenizers gives a byte with no token the unk id; the native encoder only drops it (unk_token null)
        return None, "BPE unk_token with bytes that have no token of their own"
    to_bytes = _byte_decoder()
    vocab: List[Tuple[bytes, int]] = []
    for token, token_id in model["vocab"].items():
        raw = to_bytes(token)
        if raw is not None:  # tokens with other characters (added tokens' text) are not byte-level tokens
            vocab.append((raw, token_id))
    merges = []
    for merge in model.get("merges", []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        merges.append((to_bytes(left), to_bytes(right)))
    added = [t["content"] for t in spec.get("added_tokens", [])]
    try:
        encoder = _native.ByteLevelBPE(vocab, merges, PATTERNS[pattern], bool(model.get("ignore_merges")), added)
    except ValueError as e:
        return None, str(e)
    affixes = _template_affixes(library) if include_special_tokens else ([], [])
    if affixes is None:
        return None, "its post-processor adds special tokens in a way other than a fixed prefix/suffix"
    encoder.set_affixes(*affixes)
    return encoder, None


def _split_pattern(pre_tokenizer: Optional[dict]) -> Optional[str]:
    """The regex a supported pre-tokenizer splits with, else None."""
    if pre_tokenizer and pre_tokenizer.get("type") == "ByteLevel":  # GPT-2's: its own regex, then the byte map
        if pre_tokenizer.get("use_regex", True) and not pre_tokenizer.get("add_prefix_space"):
            return GPT2_PATTERN
        return None
    if not pre_tokenizer or pre_tokenizer.get("type") != "Sequence":
        return None
    steps = pre_tokenizer.get("pretokenizers", [])
    if len(steps) != 2:
        return None
    split, byte_level = steps
    if split.get("type") != "Split" or split.get("behavior") != "Isolated" or split.get("invert"):
        return None
    if byte_level.get("type") != "ByteLevel" or byte_level.get("use_regex") or byte_level.get("add_prefix_space"):
        return None
    return (split.get("pattern") or {}).get("Regex")


def _template_affixes(library) -> Optional[Tuple[List[int], List[int]]]:
    """The ids the tokenizer's post-processor puts before and after every text (e.g. Llama's BOS)."""
    bare = library.encode("a", add_special_tokens=False).ids
    full = library.encode("a", add_special_tokens=True).ids
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            prefix, suffix = full[:start], full[start + len(bare) :]
            if library.encode("", add_special_tokens=True).ids == prefix + suffix:
                return prefix, suffix
    return None


def fill_fallbacks(tokens, lengths, texts, encode_with_library, append_id):
    """Replace the texts the native encoder left to the library (length -1) with the library's ids."""
    import numpy as np

    missing = np.flatnonzero(lengths < 0)
    if missing.size == 0:
        return tokens, lengths
    pieces, at = [], 0
    for i, n in enumerate(lengths.tolist()):
        if n >= 0:
            pieces.append(tokens[at : at + n])
            at += n
        else:
            ids = encode_with_library(texts[i])
            if ids and append_id is not None:
                ids = ids + [append_id]
            pieces.append(np.asarray(ids, dtype=np.int32))
            lengths[i] = len(ids)
    return (np.concatenate(pieces) if pieces else tokens), lengths
