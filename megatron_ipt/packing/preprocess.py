"""JSONL → Megatron `.bin/.idx`: the packing stage behind tools/preprocess_data.py.

Work is split into shards (whole files, or byte ranges of plain files), each tokenized by one worker process
in batches and written by the native builder to a part dataset; parts are merged natively, in input order, into
`{output_prefix}_{key}_document.{bin,idx}`. Memory per worker is one batch plus I/O buffers, whatever the corpus
size. Output order equals input order for any number of workers.

Megatron semantics kept on purpose: a text with no tokens becomes an empty document (a repeated document index,
no sequence, and no EOD even with --append-eod); a list of strings is a pre-split document with one sequence
per non-empty string; --append-eod adds the tokenizer's EOD to each non-empty document.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from megatron_ipt.errors import ConfigError
from megatron_ipt.flags import flag
from megatron_ipt.formats.indexed import IndexedDatasetWriter, document_prefix, merge_datasets
from megatron_ipt.io.atomic import check_writable_dir, clean_once, owned_path, remove_path, scratch_dir
from megatron_ipt.io.inputs import (
    InputError,
    Shard,
    expand_inputs,
    is_compressed,
    iter_chunks,
    iter_lines,
    line_number_at,
)
from megatron_ipt.io.jsonl import BadLines, LineError, parse_keys
from megatron_ipt.process import die_with_parent
from megatron_ipt.tokenizers import Tokenizer, TokenizerSpec, flatten
from megatron_ipt.tokenizers.base import utf8_texts

BATCH_DOCUMENTS = 1024
BATCH_BYTES = 4 << 20
# One JSON key per line is read by the native scanner (csrc/jsonl_scan.h) a chunk of lines at a time, the lines it
# is not certain about by parse_keys; False: every line by parse_keys (the tests compare the two).
NATIVE_READER = True


# The argument groups of tools/preprocess_data.py's --help
INPUT = "input data"
OUTPUT = "output data"
SHARDS = "multi-node (a Slurm array: one task per shard, then tools/merge_datasets.py; see docs/preprocess.md)"
RUNTIME = "runtime"
TOKENIZER = "tokenizer"  # add_tokenizer_args' group


@dataclass(kw_only=True)
class PreprocessConfig:
    """One packing run; each field but the tokenizer is a flag of tools/preprocess_data.py."""

    input: str = flag(
        help="a JSONL file, a glob, or a directory; plain, .gz or .zst", required=True, field_required=True, group=INPUT
    )
    json_keys: List[str] = flag(
        default_factory=lambda: ["text"], help="keys to extract from each line (default: text)", group=INPUT
    )
    skip_bad_lines: bool = flag(
        False,
        help="skip lines with malformed JSON, a missing key, a non-string value or invalid UTF-8, "
        "and count them, instead of stopping with an error",
        group=INPUT,
    )
    tokenizer: TokenizerSpec
    append_eod: bool = flag(False, help="append the end-of-document token to every non-empty document", group=TOKENIZER)
    output_prefix: str = flag(
        help="outputs are {prefix}_{key}_document.{bin,idx}", required=True, field_required=True, group=OUTPUT
    )
    # this run packs one of `num_shards` equal byte slices of the input (a Slurm array task)
    num_shards: int = flag(
        1,
        help="cut the input (its files in order, as one stream of bytes) into this many equal byte ranges ...",
        group=SHARDS,
    )
    shard_index: int = flag(
        0,
        help="... and pack only the lines that start in range number SHARD_INDEX (0-based; e.g. "
        "$SLURM_ARRAY_TASK_ID); a compressed file is never cut and goes whole to the range it starts in",
        group=SHARDS,
    )
    workers: int = flag(
        1, help="worker processes (default: all cores)", flag_default=os.cpu_count() or 1, group=RUNTIME
    )
    threads_per_worker: int = flag(
        1,
        help="tokenizer threads inside each worker process (SentencePiece models; the GIL is released), "
        "e.g. --workers 1 --threads-per-worker 8 tokenizes on 8 cores from one process",
        group=RUNTIME,
    )
    shard_bytes: Optional[int] = flag(
        None,
        help="size of the byte-range work units plain files are cut into when --workers > 1 "
        "(default: input size / (4 x workers), at least 8 MiB)",
        group=RUNTIME,
    )
    log_interval: int = flag(1000, help="documents between progress lines when not on a terminal", group=RUNTIME)

    def output_prefix_for(self, key: str) -> str:
        return document_prefix(self.output_prefix, key)


@dataclass
class ShardStats:
    """What one worker saw in one shard; summed into the run's totals."""

    documents: int = 0
    bytes: int = 0
    blank_lines: int = 0
    bad_lines: BadLines = field(default_factory=BadLines)
    tokens: Counter = field(default_factory=Counter)  # json key → tokens
    empty_documents: Counter = field(default_factory=Counter)  # json key → documents without tokens

    def add(self, other: "ShardStats"):
        self.documents += other.documents
        self.bytes += other.bytes
        self.blank_lines += other.blank_lines
        self.bad_lines.add(other.bad_lines)
        self.tokens.update(other.tokens)
        self.empty_documents.update(other.empty_documents)


# ------------------------------------------------------------------------------------------- one shard


class _Packer:
    """Tokenizes batches of parsed documents and appends them to one writer per JSON key."""

    def __init__(self, config: PreprocessConfig, tokenizer: Tokenizer, writers: Dict[str, IndexedDatasetWriter]):
        self.config, self.tokenizer, self.writers = config, tokenizer, writers

    def pack(self, batch: List[List[object]], where: List[tuple], stats: ShardStats):
        for k, key in enumerate(self.config.json_keys):
            values = [doc[k] for doc in batch]
            eod = self.tokenizer.eod if self.config.append_eod else None
            writer = self.writers[key]
            tokens_before = writer.token_count
            if all(isinstance(v, str) for v in values):
                flat, lengths = self._encode(values, where, eod)
                writer.add_batch(flat, lengths)
                empties = int(np.count_nonzero(lengths == 0))
            else:  # pre-split sentences: one sequence per non-empty sentence
                sentences = [s for v in values for s in (v if isinstance(v, list) else [v])]
                owners = [i for i, v in enumerate(values) for _ in (v if isinstance(v, list) else [v])]
                ids = self._encode(sentences, [where[i] for i in owners], None, flat=False)
                per_document = np.zeros(len(values), dtype=np.int64)
                kept = []
                for owner, sentence_ids in zip(owners, ids):
                    if sentence_ids:
                        kept.append(sentence_ids)
                        per_document[owner] += 1
                if eod is not None:  # EOD ends the last sentence of each non-empty document, as in Megatron
                    for last in np.cumsum(per_document)[per_document > 0] - 1:
                        kept[last].append(eod)
                flat, lengths = flatten(kept)
                writer.add_batch(flat, lengths, per_document)
                empties = int(np.count_nonzero(per_document == 0))
            stats.tokens[key] += writer.token_count - tokens_before
            stats.empty_documents[key] += empties

    def pack_utf8(self, text: bytes, ends: np.ndarray, start: int, where, stats: ShardStats):
        """Pack the documents of one key whose texts lie in UTF-8 back to back in `text` (see
        Tokenizer.encode_utf8_flat); `where(i)` is (path, line, offset) of document i, wanted only on an error."""
        (key,) = self.config.json_keys
        eod = self.tokenizer.eod if self.config.append_eod else None
        try:
            flat, lengths = self.tokenizer.encode_utf8_flat(text, ends, start, eod)
        except Exception:
            self._encode(utf8_texts(text, ends, start), [where(i) for i in range(len(ends))], eod)
            raise
        writer = self.writers[key]
        tokens_before = writer.token_count
        writer.add_batch(flat, lengths)
        stats.tokens[key] += writer.token_count - tokens_before
        stats.empty_documents[key] += int(np.count_nonzero(lengths == 0))

    def _encode(self, texts: List[str], where: List[tuple], append_id, flat=True):
        try:
            if flat:
                return self.tokenizer.encode_batch_flat(texts, append_id)
            return self.tokenizer.encode_batch(texts)
        except Exception:
            # Find the document the tokenizer rejects (e.g. a lone surrogate from a "\ud800" escape).
            for text, (path, line, offset) in zip(texts, where):
                try:
                    self.tokenizer.encode(text)
                except Exception as e:
                    line = line if line is not None else line_number_at(path, offset)
                    raise InputError(path, line, f"cannot tokenize: {type(e).__name__}: {e}") from None
            raise


def process_shard(
    shard: Shard,
    config: PreprocessConfig,
    tokenizer: Tokenizer,
    writers: Dict[str, IndexedDatasetWriter],
    progress=None,
) -> ShardStats:
    """Tokenize every line of `shard` into `writers`; raise InputError on bad input unless skipping."""
    # The loop makes objects per line (the parsed record, lists) that never form cycles: the cyclic collector,
    # which would otherwise run every few hundred lines and walk them, is paused for the shard.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _process_shard(shard, config, tokenizer, writers, progress)
    finally:
        if collecting:
            gc.enable()


def _native_readable(config: PreprocessConfig) -> bool:
    if not NATIVE_READER or len(config.json_keys) != 1:
        return False
    try:
        config.json_keys[0].encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _process_shard(shard, config, tokenizer, writers, progress) -> ShardStats:
    if _native_readable(config):
        return _process_shard_native(shard, config, tokenizer, writers, progress)
    stats = ShardStats(bad_lines=BadLines(skip=config.skip_bad_lines))
    packer = _Packer(config, tokenizer, writers)
    batch, where, batch_bytes = [], [], 0
    reported = (0, 0, 0)  # documents, tokens, bytes already passed to `progress`

    def flush():
        nonlocal batch, where, batch_bytes, reported
        if batch:
            packer.pack(batch, where, stats)
            if progress is not None:
                now = (stats.documents, sum(stats.tokens.values()), stats.bytes)
                progress.add(*(a - b for a, b in zip(now, reported)))
                reported = now
        batch, where, batch_bytes = [], [], 0

    for offset, number, raw in iter_lines(shard):
        stats.bytes += len(raw)
        if not raw or raw.isspace():  # = not raw.strip(), without copying the line
            stats.blank_lines += 1
            continue
        try:
            values = parse_keys(raw, config.json_keys)
        except LineError as e:
            stats.bad_lines.handle(shard.path, number if number is not None else line_number_at(shard.path, offset), e)
            continue
        batch.append(values)
        where.append((shard.path, number, offset))
        stats.documents += 1
        batch_bytes += len(raw)
        if len(batch) >= BATCH_DOCUMENTS or batch_bytes >= BATCH_BYTES:
            flush()
    flush()
    return stats


def _process_shard_native(shard, config, tokenizer, writers, progress) -> ShardStats:
    """_process_shard for one JSON key: the native scanner takes each chunk of lines apart and hands the texts to
    the encoder as UTF-8; a line it leaves (kind 2: not plain JSON it is sure of, or bad) goes through parse_keys
    as in _process_shard, in its place in the input order, with the same messages and counts."""
    stats = ShardStats(bad_lines=BadLines(skip=config.skip_bad_lines))
    packer = _Packer(config, tokenizer, writers)
    reported = (0, 0, 0)  # documents, tokens, bytes already passed to `progress`
    number = 1  # of the chunk's first line, when the shard starts at the top of its file
    for offset, numbered, chunk in iter_chunks(shard, BATCH_BYTES):
        scanned = _ScannedChunk(shard, offset, number if numbered else None, chunk, config.json_keys[0])
        scanned.pack(packer, stats)
        number += len(scanned.kinds)
        if progress is not None:
            now = (stats.documents, sum(stats.tokens.values()), stats.bytes)
            progress.add(*(a - b for a, b in zip(now, reported)))
            reported = now
    return stats


class _ScannedChunk:
    """One chunk of whole lines (iter_chunks) as the native scanner sees it."""

    def __init__(self, shard: Shard, offset: int, number: Optional[int], chunk: memoryview, key: str):
        from megatron_ipt import _native

        self.shard, self.offset, self.number, self.chunk = shard, offset, number, chunk
        self.kinds, self.line_ends, self.text, self.text_ends = _native.scan_jsonl(chunk, key)
        self.documents = np.flatnonzero(self.kinds == 0)  # the line of each scanned document

    def where(self, line: int) -> tuple:
        """(path, line number or None, byte offset or -1) of line `line` of the chunk, as iter_lines says."""
        start = int(self.line_ends[line - 1]) if line else 0
        at = -1 if is_compressed(self.shard.path) else self.offset + start
        return self.shard.path, (self.number + line if self.number is not None else None), at

    def pack_scanned(self, packer: _Packer, stats: ShardStats, first: int, last: int):
        """Scanned documents first..last-1 of the chunk."""
        if last > first:
            start = int(self.text_ends[first - 1]) if first else 0
            ends = self.text_ends[first:last]
            packer.pack_utf8(self.text, ends, start, lambda i: self.where(int(self.documents[first + i])), stats)
            stats.documents += last - first

    def pack(self, packer: _Packer, stats: ShardStats):
        stats.bytes += len(self.chunk)
        stats.blank_lines += int(np.count_nonzero(self.kinds == 1))
        done = 0  # scanned documents packed so far
        batch, where = [], []  # documents of the lines left to parse_keys, not packed yet
        for line in np.flatnonzero(self.kinds == 2).tolist():
            before = int(np.searchsorted(self.documents, line))  # scanned documents above this line
            if before > done:
                if batch:
                    packer.pack(batch, where, stats)
                    stats.documents += len(batch)
                    batch, where = [], []
                self.pack_scanned(packer, stats, done, before)
                done = before
            path, number, at = self.where(line)
            raw = bytes(self.chunk[(int(self.line_ends[line - 1]) if line else 0) : int(self.line_ends[line])])
            try:
                values = parse_keys(raw, packer.config.json_keys)
            except LineError as e:
                stats.bad_lines.handle(path, number if number is not None else line_number_at(path, at), e)
                continue
            batch.append(values)
            where.append((path, number, at))
        if batch:
            packer.pack(batch, where, stats)
            stats.documents += len(batch)
        self.pack_scanned(packer, stats, done, len(self.documents))


# ------------------------------------------------------------------------------------------- workers


class _Progress:
    """Counters shared by all workers (docs, tokens, bytes), read by the main process to report speed."""

    def __init__(self, ctx):
        self.values = ctx.Array("q", 3)

    def add(self, docs: int, tokens: int, nbytes: int):
        with self.values.get_lock():
            self.values[0] += docs
            self.values[1] += tokens
            self.values[2] += nbytes

    def snapshot(self):
        with self.values.get_lock():
            return tuple(self.values)


_worker: dict = {}


def _init_worker(config: PreprocessConfig, progress: _Progress, part_dir: str, parent: int):
    # a killed preprocess must not leave its workers tokenizing into a dead run's parts (also one killed while
    # this worker was still starting: hence the parent's own pid)
    die_with_parent(parent=parent)
    logging.getLogger("megatron_ipt.tokenizers").setLevel(logging.ERROR)  # the main process said it already
    _worker.update(
        config=config, progress=progress, part_dir=part_dir, tokenizer=config.tokenizer.build(config.threads_per_worker)
    )


def _run_part(task):
    index, shard = task
    config = _worker["config"]
    prefixes = {key: os.path.join(_worker["part_dir"], f"{index:06d}_{key}") for key in config.json_keys}
    return index, pack_shards([shard], prefixes, config, _worker["tokenizer"], _worker["progress"])


def pack_shards(
    shards: List[Shard],
    prefixes: Dict[str, str],
    config: PreprocessConfig,
    tokenizer: Tokenizer,
    progress,
    inputs: Optional[List[str]] = None,
) -> ShardStats:
    """Pack `shards`, in order, into one dataset per JSON key: all finalized together, or none left behind.
    `inputs`: the run's input files, which must hold a document (InputError naming them, nothing written)."""
    writers = {key: IndexedDatasetWriter(prefix, vocab_size=tokenizer.vocab_size) for key, prefix in prefixes.items()}
    stats = ShardStats()
    try:
        for shard in shards:
            stats.add(process_shard(shard, config, tokenizer, writers, progress))
        if inputs is not None and stats.documents == 0:
            raise no_documents_error(inputs, stats)
        for writer in writers.values():
            writer.finalize()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    return stats


# ------------------------------------------------------------------------------------------- the input slices


def task_slice(files: List[str], num_shards: int, shard_index: int) -> List[Shard]:
    """The part of the input that task `shard_index` of `num_shards` packs (--num-shards/--shard-index).

    The files, in order, are one stream of bytes cut into `num_shards` equal ranges: task i packs the lines that
    start in range i (a line belongs to the range its first byte falls in, so no line is lost or packed twice).
    Many files spread over the tasks file by file, one big file by byte ranges. A compressed file cannot be
    cut: it belongs whole to the task its first byte falls in. Merging the tasks' outputs in task order
    (tools/merge_datasets.py) gives the dataset one run over the whole input writes, byte for byte."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ConfigError(f"--shard-index {shard_index} of --num-shards {num_shards}: need 0 <= index < num-shards")
    sizes = [os.path.getsize(p) for p in files]
    total = sum(sizes)
    lo, hi = total * shard_index // num_shards, total * (shard_index + 1) // num_shards
    slices, at = [], 0
    for path, size in zip(files, sizes):
        begin, end = at, at + size
        at = end
        if is_compressed(path):
            if lo <= begin < hi:
                slices.append(Shard(path))
        elif max(lo, begin) < min(hi, end):
            a, b = max(lo, begin) - begin, min(hi, end) - begin
            slices.append(Shard(path, a, None if b == size else b))
    return slices


def split_shards(shards: List[Shard], target_bytes: int) -> List[Shard]:
    """Cut plain-file shards into byte ranges of about `target_bytes`, for the workers; compressed files stay
    whole (no seeking)."""
    out = []
    for shard in shards:
        end = shard.end if shard.end is not None else os.path.getsize(shard.path)
        if is_compressed(shard.path) or end - shard.start <= target_bytes:
            out.append(shard)
            continue
        starts = list(range(shard.start, end, target_bytes))
        for i, begin in enumerate(starts):
            last = i + 1 == len(starts)
            out.append(Shard(shard.path, begin, (shard.end if last else starts[i + 1])))
    return out


# ------------------------------------------------------------------------------------------- the run


@dataclass
class PreprocessResult:
    stats: ShardStats
    outputs: Dict[str, str]  # json key → output prefix
    files: List[str]
    shards: int
    seconds: float
    vocab_size: int
    tokenizer: str  # which encoder did the work


def preprocess(config: PreprocessConfig, reporter=None) -> PreprocessResult:
    """Run the packing stage. Raises InputError for bad input (nothing finished-looking is left)."""
    start = time.time()
    output_dir = os.path.dirname(os.path.abspath(config.output_prefix))
    check_writable_dir(output_dir)  # before any work, not after it
    clean_once(output_dir)  # the parts and temporary files of killed runs
    files = inputs = expand_inputs(config.input)
    task = task_slice(files, config.num_shards, config.shard_index)
    whole = config.num_shards == 1  # the whole input: it must hold a document (one Slurm task's slice may not)
    if whole and not task:
        raise no_documents_error(inputs, ShardStats())
    files = list(dict.fromkeys(shard.path for shard in task))  # the files this task reads part of
    total_bytes = sum((s.end if s.end is not None else os.path.getsize(s.path)) - s.start for s in task)
    workers = max(1, config.workers)
    # A few shards per worker balance uneven files; shards are never smaller than 8 MiB.
    target = config.shard_bytes or max(8 << 20, total_bytes // (4 * workers) + 1)
    shards = split_shards(task, target) if workers > 1 else task
    ctx = mp.get_context("spawn")
    progress = _Progress(ctx)
    reporter = reporter or _Reporter(config.log_interval, total_bytes if not any(map(is_compressed, files)) else None)
    stats = ShardStats()
    outputs = {key: config.output_prefix_for(key) for key in config.json_keys}

    # Built here first even when workers build their own: a bad tokenizer must fail now, with its message, not
    # inside a Pool initializer (where multiprocessing respawns failing workers forever).
    tokenizer = config.tokenizer.build(config.threads_per_worker)
    if config.append_eod and tokenizer.eod is None:
        raise ConfigError(f"--append-eod: tokenizer {tokenizer.model_path} has no end-of-document token")
    if workers == 1 or not shards:
        progress_ = _ReportingProgress(progress, reporter)
        stats = pack_shards(shards, outputs, config, tokenizer, progress_, inputs if whole else None)
    else:
        part_dir = owned_path(f"{config.output_prefix}.parts")
        os.makedirs(part_dir)
        try:
            # ProcessPoolExecutor, not multiprocessing.Pool: a worker that dies (OOM killer, segfault) breaks the
            # pool with an error instead of leaving its task pending forever.
            with ProcessPoolExecutor(
                min(workers, len(shards)),
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(config, progress, part_dir, os.getpid()),
            ) as pool:
                pending = [pool.submit(_run_part, (i, s)) for i, s in enumerate(shards)]
                try:
                    while True:
                        done, not_done = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                        reporter.update(*progress.snapshot())
                        for future in done:
                            future.result()  # re-raises a worker's error here
                        if not not_done:
                            break
                except BaseException:
                    for future in pending:
                        future.cancel()
                    raise
                results = dict(f.result() for f in pending)
            for i in range(len(shards)):
                stats.add(results[i])
            if whole and stats.documents == 0:
                raise no_documents_error(inputs, stats)
            for key, prefix in outputs.items():
                merge_datasets([os.path.join(part_dir, f"{i:06d}_{key}") for i in range(len(shards))], prefix)
        except OSError as e:
            raise _name_the_output(e, part_dir, outputs) from None
        finally:
            remove_path(part_dir)
    reporter.update(*progress.snapshot())
    reporter.close()
    return PreprocessResult(
        stats, outputs, files, len(shards), time.time() - start, tokenizer.vocab_size, describe(tokenizer)
    )


def no_documents_error(inputs: List[str], stats: ShardStats) -> InputError:
    """The input holds no document: empty, or only blank (or skipped bad) lines."""
    what = [f"{stats.blank_lines:,} blank lines"] if stats.blank_lines else []
    if stats.bad_lines.total:
        what.append(f"{stats.bad_lines.total:,} bad lines skipped")
    why = ", ".join(what) if what else ("it is empty" if len(inputs) == 1 else "they are empty")
    names = ", ".join(inputs[:3]) + (f" and {len(inputs) - 3} more" if len(inputs) > 3 else "")
    verb = "holds" if len(inputs) == 1 else "hold"
    return InputError(names, None, f"{verb} no documents ({why}): nothing to pack")


def _name_the_output(error: OSError, part_dir: str, outputs: Dict[str, str]) -> OSError:
    """A worker's failed write names its part file (`000003_text.bin` in the run's temporary directory): name the
    output it was for instead, which is what the user knows (same directory, same disk)."""
    if error.filename and os.path.dirname(error.filename) == part_dir:
        stem, ext = os.path.splitext(os.path.basename(error.filename))
        key = stem.split("_", 1)[-1]
        if key in outputs:
            return type(error)(error.errno, error.strerror, outputs[key] + ext)
    return error


def describe(tokenizer: Tokenizer) -> str:
    engine = "native encoder" if tokenizer.native else f"{tokenizer.library_name} library"
    return f"{tokenizer.tokenizer_type} ({engine}), vocab {tokenizer.vocab_size:,}"


class _ReportingProgress:
    """In-process progress: add to the counters and let the reporter decide whether to print."""

    def __init__(self, progress: _Progress, reporter):
        self.progress, self.reporter = progress, reporter

    def add(self, docs, tokens, nbytes):
        self.progress.add(docs, tokens, nbytes)
        self.reporter.update(*self.progress.snapshot())


class _Reporter:
    """A tqdm bar on a terminal; otherwise Megatron's log line every `log_interval` documents."""

    def __init__(self, log_interval: int, total_bytes: Optional[int], quiet: bool = False):
        self.log_interval = max(1, log_interval)
        self.start = time.time()
        self.next_log = self.log_interval
        self.bar = None
        self.last_bytes = 0
        if sys.stderr.isatty() and not quiet:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="packing", dynamic_ncols=True
            )

    def update(self, docs: int, tokens: int, nbytes: int):
        elapsed = max(time.time() - self.start, 1e-9)
        if self.bar is not None:
            self.bar.update(nbytes - self.last_bytes)
            self.last_bytes = nbytes
            self.bar.set_postfix_str(f"{docs / elapsed:,.0f} docs/s, {tokens / elapsed:,.0f} tokens/s", refresh=False)
        elif docs >= self.next_log:
            print(
                f"Processed {docs} documents ({docs / elapsed:.2f} docs/s, {tokens / elapsed:,.0f} tokens/s, "
                f"{nbytes / elapsed / (1 << 20):.2f} MB/s).",
                file=sys.stderr,
                flush=True,
            )
            self.next_log = (docs // self.log_interval + 1) * self.log_interval

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------------- worker search


def find_optimal_workers(config: PreprocessConfig, workers_to_check: List[int], max_documents: int):
    """Megatron-LM's --find-optimal-num-workers: pack the first `max_documents` documents of the input once per
    worker count, into a scratch directory, and return [(workers, docs/s)] fastest first. The real output is not
    written. The sample is cut into a few byte ranges per worker so that every count has work for all workers."""
    output_dir = os.path.dirname(os.path.abspath(config.output_prefix))
    check_writable_dir(output_dir)  # the scratch space sits where the real run will write
    clean_once(output_dir)
    with scratch_dir(os.path.join(output_dir, "find_workers")) as scratch:
        sample = os.path.join(scratch, "sample.jsonl")
        documents = 0
        with open(sample, "wb") as out:
            for path in expand_inputs(config.input):
                for _, _, raw in iter_lines(Shard(path)):
                    if documents >= max_documents:
                        break
                    if raw.strip():
                        out.write(raw if raw.endswith(b"\n") else raw + b"\n")
                        documents += 1
        size = os.path.getsize(sample)
        results = []
        for workers in workers_to_check:
            trial = dataclasses.replace(
                config,
                input=sample,
                output_prefix=os.path.join(scratch, f"w{workers}"),
                workers=workers,
                shard_bytes=max(1 << 16, size // (4 * workers) + 1),
                num_shards=1,
                shard_index=0,
                log_interval=1 << 62,
            )
            result = preprocess(trial, reporter=_Reporter(trial.log_interval, None, quiet=True))
            results.append((workers, result.stats.documents / max(result.seconds, 1e-9)))
            for prefix in result.outputs.values():
                for ext in (".bin", ".idx"):
                    os.remove(prefix + ext)
    return sorted(results, key=lambda r: r[1], reverse=True)
