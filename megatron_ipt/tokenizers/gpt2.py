"""`GPT2BPETokenizer`: GPT-2's byte-level BPE from a `vocab.json` + `merges.txt` pair (`--vocab-file`,
`--merge-file`), encoded as megatron-core does (Hugging Face's GPT-2 tokenizer over those two files: GPT-2's regex,
no prefix space, `<|endoftext|>` recognised as the special token it is and used as EOD)."""

from __future__ import annotations

import json
import os
from typing import List, Sequence

from megatron_ipt.errors import ConfigError
from megatron_ipt.tokenizers.base import ByteLevelTokenizer

GPT2_TYPES = ("GPT2BPETokenizer",)  # a vocab.json + merges.txt pair (--vocab-file, --merge-file)
GPT2_EOD = "<|endoftext|>"


class GPT2BPETokenizer(ByteLevelTokenizer):
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
            raise ConfigError(
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
            from megatron_ipt.tokenizers.bytelevel import native_from_tokenizer_json

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
