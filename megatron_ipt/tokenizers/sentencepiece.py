"""SentencePiece models (`SentencePieceTokenizer`, `GPTSentencePieceTokenizer`, and the aliases `Llama2Tokenizer`,
`MistralTokenizer`): plain `encode` of the text, no BOS; EOD is the model's `</s>`. BPE models are encoded by our
native encoder (csrc/), the others by the sentencepiece library."""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence

from megatron_ipt.tokenizers.base import Tokenizer

logger = logging.getLogger(__name__)

SENTENCEPIECE_TYPES = ("SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer", "MistralTokenizer")


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

    def encode_utf8_flat(self, text: bytes, ends, start: int = 0, append_id: Optional[int] = None):
        if self._native is None:
            return super().encode_utf8_flat(text, ends, start, append_id)
        return self._native.encode_flat_utf8(
            text, ends, self.num_threads, -1 if append_id is None else append_id, start
        )

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])


def is_sentencepiece_model(path: str) -> bool:
    import sentencepiece

    try:
        sentencepiece.SentencePieceProcessor(model_file=path)
        return True
    except Exception:
        return False


def _valid_id(token_id: int) -> Optional[int]:
    return token_id if token_id >= 0 else None
