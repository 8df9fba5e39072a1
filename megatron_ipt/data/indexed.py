"""Python face of the native MMIDIDX builder (csrc/indexed_builder.cpp).

Writers are atomic: tokens go to `{prefix}.bin.inprogress`, the index to `{prefix}.idx.inprogress`, and both are
renamed only when finalize succeeded, the `.idx` last. A killed or failed build therefore never leaves a
`.bin/.idx` pair that `megatron.core`'s `IndexedDataset.exists` would take for a finished dataset.
"""

from __future__ import annotations

import os
from typing import Iterable, List, Optional, Sequence

import numpy as np

from megatron_ipt import _native

INPROGRESS = ".inprogress"
DTYPE_NAMES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 8: "uint16"}


def optimal_dtype_code(vocab_size: int) -> int:
    """Megatron's rule: uint16 (code 8) when the vocabulary is below 65500, else int32 (code 4)."""
    return _native.optimal_dtype_code(vocab_size)


def read_index_header(prefix: str) -> dict:
    """`{"dtype_code", "sequence_count", "document_count"}` of `{prefix}.idx`."""
    return _native.read_index_header(prefix + ".idx")


class IndexedDatasetWriter:
    """Streams documents into `{prefix}.bin/.idx` with bounded memory; see module docstring for atomicity."""

    def __init__(self, prefix: str, *, vocab_size: Optional[int] = None, dtype_code: Optional[int] = None):
        if (vocab_size is None) == (dtype_code is None):
            raise ValueError("give exactly one of vocab_size or dtype_code")
        self.prefix = prefix
        self.dtype_code = dtype_code if dtype_code is not None else optimal_dtype_code(vocab_size)
        directory = os.path.dirname(os.path.abspath(prefix))
        os.makedirs(directory, exist_ok=True)
        self._builder = _native.IndexedBuilder(prefix + ".bin" + INPROGRESS, self.dtype_code)
        self._done = False

    # -- appending ------------------------------------------------------------------------------------------
    def add_batch(self, tokens: np.ndarray, lengths: np.ndarray, sequences_per_document: Optional[np.ndarray] = None):
        """Tokens back to back with one length per sequence; without `sequences_per_document`, one sequence per
        document and a length of 0 is an empty document (as Megatron writes an empty text)."""
        self._builder.add_batch(tokens, lengths, sequences_per_document)

    def add_documents(self, documents: Sequence[Sequence[int]], append_token: Optional[int] = None):
        """One token list per document (the shape tokenizers return); an empty list is an empty document.
        `append_token` (e.g. EOD) ends every non-empty document."""
        self._builder.add_documents(documents, -1 if append_token is None else append_token)

    def add_index(self, prefix: str):
        """Append a finished dataset (native copy of its .bin, shifted index)."""
        self._builder.add_index(prefix)

    # -- finishing ------------------------------------------------------------------------------------------
    def finalize(self) -> str:
        """Write the index and publish both files under their final names. Returns the prefix."""
        bin_tmp, idx_tmp = self.prefix + ".bin" + INPROGRESS, self.prefix + ".idx" + INPROGRESS
        try:
            self._builder.finalize(idx_tmp)
            # Drop a stale index first: an old .idx must never pair with the new .bin, even for an instant.
            if os.path.exists(self.prefix + ".idx"):
                os.remove(self.prefix + ".idx")
            os.replace(bin_tmp, self.prefix + ".bin")
            os.replace(idx_tmp, self.prefix + ".idx")
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.prefix

    def abort(self):
        """Remove everything this writer created; finished outputs of earlier runs are left alone."""
        if self._done:
            return
        self._done = True
        self._builder.abort()
        for path in (self.prefix + ".bin" + INPROGRESS, self.prefix + ".idx" + INPROGRESS):
            if os.path.exists(path):
                os.remove(path)

    @property
    def sequence_count(self) -> int:
        return self._builder.sequence_count

    @property
    def document_count(self) -> int:
        return self._builder.document_count

    @property
    def token_count(self) -> int:
        return self._builder.token_count

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and not self._done:
            self.finalize()
        else:
            self.abort()


def merge_datasets(prefixes: Iterable[str], output_prefix: str) -> str:
    """Concatenate finished datasets, in the order given, into `output_prefix` (like Megatron's
    tools/merge_datasets.py, natively: no Python lists, the .bin bytes copied by the kernel)."""
    prefixes: List[str] = list(prefixes)
    if not prefixes:
        raise ValueError("nothing to merge")
    dtype_code = read_index_header(prefixes[0])["dtype_code"]
    with IndexedDatasetWriter(output_prefix, dtype_code=dtype_code) as writer:
        for prefix in prefixes:
            writer.add_index(prefix)
    return output_prefix
