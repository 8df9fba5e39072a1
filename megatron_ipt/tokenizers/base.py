"""What the pipeline needs from a tokenizer (`Tokenizer`), and the base of the byte-level types, which encode with
our native encoder where it is exact and with their library for the rest."""

from __future__ import annotations

import itertools
import logging
from typing import List, Optional, Sequence, Tuple

import numpy as np

from megatron_ipt.errors import ConfigError

logger = logging.getLogger(__name__)


def flatten(ids: Sequence[Sequence[int]]) -> Tuple[np.ndarray, np.ndarray]:
    """Token lists -> (tokens back to back as int64, one int64 length per list), without an intermediate list."""
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    return tokens, lengths


class TokenizerFileError(ConfigError):
    """A tokenizer file a tool cannot use (corrupt, or a directory where a file belongs); `str(error)` is one line
    naming the path and the problem."""


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

    def encode_utf8_flat(self, text: bytes, ends: np.ndarray, start: int = 0, append_id: Optional[int] = None):
        """`encode_batch_flat` of the texts held in UTF-8 back to back in `text` from `start`, text i ending at
        `ends[i]` (the packing stage's native JSONL scanner hands them over so); native encoders read them in place."""
        return self.encode_batch_flat(utf8_texts(text, ends, start), append_id)

    @property
    def unique_identifiers(self) -> dict:
        """What megatron.core.datasets hashes into its index-cache names."""
        return {"class": type(self).__name__, "tokenizer_type": self.tokenizer_type, "tokenizer_path": self.model_path}


class ByteLevelTokenizer(Tokenizer):
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
        from megatron_ipt.tokenizers.bytelevel import fill_fallbacks  # here: it loads the native extension

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

    def encode_utf8_flat(self, text: bytes, ends: np.ndarray, start: int = 0, append_id: Optional[int] = None):
        if self._native is None:
            return super().encode_utf8_flat(text, ends, start, append_id)
        from megatron_ipt.tokenizers.bytelevel import fill_fallbacks

        append = -1 if append_id is None else append_id
        tokens, lengths = self._native.encode_flat_utf8(text, ends, self.num_threads, append, start)
        if not (lengths < 0).any():
            return tokens, lengths
        return fill_fallbacks(tokens, lengths, utf8_texts(text, ends, start), self._library_encode, append_id)


def utf8_texts(text: bytes, ends: np.ndarray, start: int = 0) -> List[str]:
    """The texts `encode_utf8_flat` describes, as strings."""
    bounds = [start] + ends.tolist()
    return [text[a:b].decode("utf-8") for a, b in zip(bounds, bounds[1:])]


def _is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
