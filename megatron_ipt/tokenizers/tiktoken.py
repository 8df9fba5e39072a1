"""`TiktokenFileTokenizer`: an OpenAI `.tiktoken` ranks file (ids = ranks), encoded like tiktoken's `encode_ordinary`
with the cl100k regex (or Llama-3's, `tiktoken_pattern="llama3"`). Not Megatron's `TikTokenizer`, which reads a
different (JSON) vocabulary and shifts ids by its special tokens."""

from __future__ import annotations

import os
from typing import List, Sequence

from megatron_ipt.errors import ConfigError
from megatron_ipt.tokenizers.base import ByteLevelTokenizer

TIKTOKEN_TYPES = ("TiktokenFileTokenizer",)
TIKTOKEN_PATTERNS = ("cl100k", "llama3")  # TiktokenFileTokenizer's pre-tokenization regexes


class TiktokenFileTokenizer(ByteLevelTokenizer):
    library_name = "tiktoken"

    def __init__(
        self,
        model_path: str,
        tokenizer_type: str = "TiktokenFileTokenizer",
        tiktoken_pattern: str = "cl100k",
        num_threads: int = 1,
        native: bool = True,
    ):
        from megatron_ipt.tokenizers import bytelevel

        patterns = {"cl100k": bytelevel.CL100K_POSSESSIVE_PATTERN, "llama3": bytelevel.LLAMA3_PATTERN}
        if tiktoken_pattern not in patterns:
            raise ConfigError(f"tiktoken pattern {tiktoken_pattern!r}: choose one of {', '.join(patterns)}")
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
