"""Megatron's MMIDIDX v1 indexed dataset, `{prefix}.bin` + `{prefix}.idx` (megatron-core's indexed_dataset.py):
its layout, the `{prefix}_{key}_document` names and the loss mask beside a text dataset, the checks a reader makes,
and the Python face of the native builder (csrc/indexed_builder.cpp). The one home of the format: packing (packing/),
the tuning data (tuning/) and training read and write it through this module, never through each other.

Writers are atomic: tokens and index go to temporary names owned by the writing process
(`{prefix}.bin.{pid}@{host}.tmp`, megatron_ipt.io.atomic), are flushed to disk, and are published together with
`io.atomic.publish` as [bin, idx]: an older index is moved aside before the `.bin` changes and the new one renamed
in after it, so a `.idx` beside a `.bin` always belongs to it (megatron-core's reader, which checks nothing, and
ours, which checks the size with `check_pair`, never meet a mismatched pair), and the old pair is deleted only once
the new one is in place. A killed build leaves the old dataset or the new one (rolled forward by the next run) and
leftovers that the next writer in that directory removes. A failed build leaves nothing of its own.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import struct
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from megatron_ipt import _native
from megatron_ipt.errors import UserError
from megatron_ipt.io.atomic import clean_once, fsync_file, owned_path, publish, remove_path, target_of

# -- the layout ---------------------------------------------------------------------------------------------------

INDEX_MAGIC = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
HEADER_SIZE = 9 + 8 + 1 + 8 + 8  # magic, version, dtype code, sequence count, document count
# After the header: int32 sequence lengths, int64 sequence pointers (bytes into the .bin), int64 document starts.
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}
# The codes a token file may have (integers), by name.
DTYPE_NAMES = {code: np.dtype(t).name for code, t in DTYPES.items() if np.dtype(t).kind in "iu"}

# -- the names ----------------------------------------------------------------------------------------------------

TEXT_KEY = "text"
MASK_KEY = "loss_mask"  # the tuning data's loss mask: uint8 0/1 with the text's document lengths


def document_prefix(output_prefix: str, key: str) -> str:
    """What Megatron's preprocess_data.py names the dataset of one JSON key: `{prefix}_{key}_document`."""
    return f"{output_prefix}_{key}_document"


TEXT_SUFFIX = document_prefix("", TEXT_KEY)
MASK_SUFFIX = document_prefix("", MASK_KEY)


def mask_prefix_of(text_prefix: str) -> Optional[str]:
    """`P_text_document` -> `P_loss_mask_document`, the loss mask beside it; None when the prefix is not a text
    dataset's name."""
    if not text_prefix.endswith(TEXT_SUFFIX):
        return None
    return text_prefix[: -len(TEXT_SUFFIX)] + MASK_SUFFIX


_SCAN_CHUNK = 1 << 24  # entries per step of a scan over a file: bounded memory on any dataset


_ERRNO_BY_MESSAGE = {os.strerror(code): code for code in errno.errorcode}


@contextlib.contextmanager
def _os_errors():
    """The native builder reports a failed system call as RuntimeError("cannot write FILE: <strerror>"): raise it
    as the OSError it is, naming the output (not its temporary name), so that the tools print "PATH: no space
    left on device"."""
    try:
        yield
    except RuntimeError as e:
        head, _, reason = str(e).rpartition(": ")
        words = head.split(" ", 2)
        code = _ERRNO_BY_MESSAGE.get(reason)
        if code is None or len(words) < 3 or words[0] != "cannot":
            raise
        raise OSError(code, reason, target_of(words[2])) from None


def optimal_dtype_code(vocab_size: int) -> int:
    """Megatron's rule: uint16 (code 8) when the vocabulary is below 65500, else int32 (code 4)."""
    return _native.optimal_dtype_code(vocab_size)


def read_index_header(prefix: str) -> dict:
    """`{"dtype_code", "sequence_count", "document_count"}` of `{prefix}.idx`."""
    return _native.read_index_header(prefix + ".idx")


def expected_bin_size(prefix: str) -> int:
    """The `.bin` size `{prefix}.idx` describes (its last sequence's pointer plus length); raises ValueError naming
    the `.idx` when it is truncated or not an index."""
    idx = prefix + ".idx"
    try:
        header = read_index_header(prefix)
    except RuntimeError as e:
        raise IndexFormatError(str(e)) from None
    n, d = header["sequence_count"], header["document_count"]
    want = HEADER_SIZE + 4 * n + 8 * n + 8 * d
    size = os.path.getsize(idx)
    if size < want:
        raise IndexFormatError(f"{idx}: truncated index ({size} bytes, its header says {want})")
    if n == 0:
        return 0
    with open(idx, "rb") as f:
        f.seek(HEADER_SIZE + 4 * (n - 1))
        last_length = int(np.frombuffer(f.read(4), dtype=np.int32)[0])
        f.seek(HEADER_SIZE + 4 * n + 8 * (n - 1))
        last_pointer = int(np.frombuffer(f.read(8), dtype=np.int64)[0])
    itemsize = np.dtype(DTYPE_NAMES[header["dtype_code"]]).itemsize
    return last_pointer + last_length * itemsize


def check_pair(prefix: str) -> None:
    """Raise ValueError naming the files unless `{prefix}.idx` is complete and describes a `.bin` of exactly the
    size `{prefix}.bin` has (a truncated or foreign `.bin`, or an index of another build)."""
    want = expected_bin_size(prefix)
    size = os.path.getsize(prefix + ".bin")
    if size != want:
        raise IndexFormatError(
            f"{prefix}.bin is {size:,} bytes but {prefix}.idx describes {want:,}: the two files are not one dataset "
            "(truncated, or from different builds); rebuild it"
        )


class IndexFormatError(UserError, ValueError):
    """A `.bin/.idx` pair a reader would trip on; `str(error)` names the file and the problem."""


def check_dataset(prefix: str) -> dict:
    """What megatron-core's IndexedDataset would trip on (with an assertion, a numpy error or not at all), for a pair
    whose two files exist: a Megatron index of the length its header says, a known token dtype, sequence pointers
    that tile the `.bin`, a `.bin` of exactly the size they say, and at least one token. Raises IndexFormatError naming the
    file; returns {"dtype", "sequences", "documents", "tokens"}."""
    idx, bin_ = prefix + ".idx", prefix + ".bin"
    size = os.path.getsize(idx)
    with open(idx, "rb") as f:
        head = f.read(HEADER_SIZE)
    if head[:9] != INDEX_MAGIC[: len(head[:9])] or len(head) < HEADER_SIZE:
        what = "truncated" if head[:9] == INDEX_MAGIC[: len(head[:9])] else "not a Megatron index (bad header)"
        raise IndexFormatError(f"{idx}: {what} ({size} bytes)")
    version, code, sequences, documents = struct.unpack("<QBQQ", head[len(INDEX_MAGIC) :])
    if version != INDEX_VERSION:
        raise IndexFormatError(f"{idx}: index version {version}, expected 1")
    if code not in DTYPES:
        raise IndexFormatError(f"{idx}: unknown token dtype code {code} (known: {sorted(DTYPES)})")
    dtype = np.dtype(DTYPES[code])
    expected = HEADER_SIZE + 12 * sequences + 8 * documents  # int32 lengths, int64 pointers, int64 document starts
    if size < expected:
        raise IndexFormatError(
            f"{idx}: truncated: {size} bytes, but its header's {sequences} sequences and {documents} document "
            f"boundaries need {expected}"
        )
    if sequences == 0:
        raise IndexFormatError(f"{prefix}: empty dataset ({idx} indexes no documents)")
    lengths = np.memmap(idx, np.int32, "r", offset=HEADER_SIZE, shape=(sequences,))
    pointers = np.memmap(idx, np.int64, "r", offset=HEADER_SIZE + 4 * sequences, shape=(sequences,))
    starts = np.memmap(idx, np.int64, "r", offset=HEADER_SIZE + 12 * sequences, shape=(documents,))
    if lengths.min() < 0 or not _pointers_tile(lengths, pointers, dtype.itemsize):
        raise IndexFormatError(f"{idx}: corrupt: its sequence lengths and pointers disagree")
    if documents < 1 or starts[0] != 0 or starts[-1] != sequences or not _non_decreasing(starts):
        raise IndexFormatError(f"{idx}: corrupt: its document boundaries do not cover its {sequences} sequences")
    tokens = int(lengths.sum(dtype=np.int64))
    if tokens == 0:
        raise IndexFormatError(f"{prefix}: empty dataset (its {documents - 1} documents hold no tokens)")
    need, have = tokens * dtype.itemsize, os.path.getsize(bin_)
    if have < need:
        raise IndexFormatError(f"{bin_}: truncated: {have} bytes, but {idx} indexes {tokens} tokens ({need} bytes)")
    if have > need:  # megatron-core reads only what the index says: the extra bytes would be skipped silently
        raise IndexFormatError(
            f"{bin_}: {have} bytes, but {idx} indexes {tokens} tokens ({need} bytes): the two files are not one "
            "dataset (a .bin of another build?); rebuild it"
        )
    return {"dtype": dtype, "sequences": sequences, "documents": documents - 1, "tokens": tokens}


def _pointers_tile(lengths, pointers, itemsize: int) -> bool:
    """Each sequence starts where the one before ended, the first at 0; in chunks (an index of 100M sequences
    would otherwise need GBs of temporaries on every rank)."""
    expected = 0
    for start in range(0, len(lengths), _SCAN_CHUNK):
        chunk = lengths[start : start + _SCAN_CHUNK].astype(np.int64) * itemsize
        starts = np.cumsum(chunk) - chunk + expected
        if not np.array_equal(pointers[start : start + _SCAN_CHUNK], starts):
            return False
        expected = int(starts[-1] + chunk[-1])
    return True


def _non_decreasing(values) -> bool:
    return all(
        not np.any(np.diff(values[start : start + _SCAN_CHUNK + 1]) < 0) for start in range(0, len(values), _SCAN_CHUNK)
    )


# -- writing ------------------------------------------------------------------------------------------------------


class IndexedDatasetWriter:
    """Streams documents into `{prefix}.bin/.idx` with bounded memory; see module docstring for atomicity."""

    def __init__(self, prefix: str, *, vocab_size: Optional[int] = None, dtype_code: Optional[int] = None):
        if (vocab_size is None) == (dtype_code is None):
            raise ValueError("give exactly one of vocab_size or dtype_code")
        self.prefix = prefix
        self.dtype_code = dtype_code if dtype_code is not None else optimal_dtype_code(vocab_size)
        directory = os.path.dirname(os.path.abspath(prefix))
        os.makedirs(directory, exist_ok=True)
        clean_once(directory)  # what killed runs left here
        self._bin_tmp, self._idx_tmp = owned_path(prefix + ".bin"), owned_path(prefix + ".idx")
        with _os_errors():
            self._builder = _native.IndexedBuilder(self._bin_tmp, self.dtype_code)
        self._done = self._finished = False

    # -- appending ------------------------------------------------------------------------------------------
    def add_batch(self, tokens: np.ndarray, lengths: np.ndarray, sequences_per_document: Optional[np.ndarray] = None):
        """Tokens back to back with one length per sequence; without `sequences_per_document`, one sequence per
        document and a length of 0 is an empty document (as Megatron writes an empty text)."""
        with _os_errors():
            self._builder.add_batch(tokens, lengths, sequences_per_document)

    def add_documents(self, documents: Sequence[Sequence[int]], append_token: Optional[int] = None):
        """One token list per document (the shape tokenizers return); an empty list is an empty document.
        `append_token` (e.g. EOD) ends every non-empty document."""
        with _os_errors():
            self._builder.add_documents(documents, -1 if append_token is None else append_token)

    def add_index(self, prefix: str):
        """Append a finished dataset (native copy of its .bin, shifted index)."""
        with _os_errors():
            self._builder.add_index(prefix)

    # -- finishing ------------------------------------------------------------------------------------------
    def finalize(self) -> str:
        """Write the index and publish both files under their final names. Returns the prefix."""
        finalize_together([self])
        return self.prefix

    def _finish(self) -> List[Tuple[str, str]]:
        """Write the index and flush both temporary files; the [(temporary, final)] pairs to publish."""
        try:
            with _os_errors():
                self._builder.finalize(self._idx_tmp)
            for path in (self._bin_tmp, self._idx_tmp):
                fsync_file(path)
        except BaseException:
            self.abort()
            raise
        self._finished = True
        return [(self._bin_tmp, self.prefix + ".bin"), (self._idx_tmp, self.prefix + ".idx")]

    def abort(self):
        """Remove everything this writer created; finished outputs of earlier runs are left alone."""
        if self._done:
            return
        self._done = True
        try:
            if not self._finished:
                self._builder.abort()
        except RuntimeError:
            pass  # it flushes its buffers first, which fails again on a full disk; its files are removed below
        # The temporary files and the native builder's side files (named after the .bin's temporary name).
        for path in glob.glob(glob.escape(self._bin_tmp) + "*") + [self._idx_tmp]:
            remove_path(path)

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


def finalize_together(writers: Sequence[IndexedDatasetWriter]) -> None:
    """Finish writers of one directory and publish all their files in one commit, in the order given: a dataset
    that must never be seen without another (a loss mask beside its text) goes first. A failure before the
    commit removes every writer's files; from the commit on it is rolled forward (io.atomic.publish)."""
    pairs: List[Tuple[str, str]] = []
    try:
        for writer in writers:
            pairs += writer._finish()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    for writer in writers:
        writer._done = True  # from here on a failure is rolled forward, never undone
    publish(pairs)


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
