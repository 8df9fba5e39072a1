#!/usr/bin/env python
"""Tokenize JSONL into Megatron `.bin/.idx` datasets. Megatron-LM's flags and output names; see docs/preprocess.md."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from dataclasses import dataclass
from typing import List, Optional

from megatron_ipt.errors import UserError
from megatron_ipt.flags import add_flags, config_from_args, flag, in_help_order
from megatron_ipt.io.cli import report_error
from megatron_ipt.packing.preprocess import (
    INPUT,
    RUNTIME,
    TOKENIZER,
    PreprocessConfig,
    PreprocessResult,
    find_optimal_workers,
    preprocess,
)
from megatron_ipt.tokenizers import TokenizerSpec, add_tokenizer_args

MODEL_SIDE = "Megatron-LM model-side tokenizer flags (they size the model in training, not the data)"


@dataclass(frozen=True)
class DataVocabulary:
    """The vocabulary the data is for: it goes into the tokenizer spec."""

    vocab_size: Optional[int] = flag(
        None,
        help="the vocabulary the data is meant for (Megatron: size of vocab before EOD or padding): the "
        "tokenizer's must fit in it, else the tool stops before writing (default: the tokenizer's). NullTokenizer: "
        "required, the text's ids are 0..N-1 and N is the end-of-document id",
        group=TOKENIZER,
    )


@dataclass(frozen=True)
class WorkerSearch:
    """Megatron-LM's --find-optimal-num-workers: time worker counts instead of writing the dataset."""

    find_optimal_num_workers: bool = flag(
        False,
        help="time the first --max-documents documents with each of --workers-to-check worker counts, print them "
        "fastest first, and exit without writing the output",
        group=RUNTIME,
    )
    workers_to_check: List[int] = flag(
        default_factory=lambda: [16, 32, 64],
        help="worker counts --find-optimal-num-workers tries (default: 16 32 64)",
        group=RUNTIME,
    )
    max_documents: Optional[int] = flag(
        None,
        help="documents each --find-optimal-num-workers trial packs (default: 100000; only read with that flag, "
        "as in Megatron-LM)",
        group=RUNTIME,
    )


_NO_EFFECT = "accepted for Megatron-LM compatibility, no effect here"


@dataclass(frozen=True)
class MegatronCompatibility:
    """Megatron-LM's flags that have nothing to do here (or only one accepted value), so its scripts run."""

    split_sentences: bool = flag(
        False,
        help="not supported (Megatron-LM's NLTK punkt splitting); give each document as a list of strings instead",
        group=INPUT,
    )
    keep_newlines: bool = flag(
        False,
        help="accepted for Megatron-LM compatibility: it keeps newlines when sentences are split, and texts are "
        "never split here, so their newlines are always kept",
        group=INPUT,
    )
    lang: str = flag(
        "english",
        help="accepted for Megatron-LM compatibility: NLTK's sentence-splitting language (see --split-sentences)",
        group=TOKENIZER,
    )
    partitions: int = flag(
        1,
        help="accepted for Megatron-LM compatibility; not needed: workers split inputs by byte ranges",
        group=RUNTIME,
    )
    keep_sequential_samples: bool = flag(
        False,
        help="accepted for Megatron-LM compatibility; output order always equals input order",
        group=RUNTIME,
    )
    padded_vocab_size: Optional[int] = flag(None, help=_NO_EFFECT, group=MODEL_SIDE)
    null_tokenizer_eod_id: Optional[int] = flag(None, help=_NO_EFFECT, group=MODEL_SIDE)
    null_tokenizer_pad_id: Optional[int] = flag(None, help=_NO_EFFECT, group=MODEL_SIDE)
    pad_vocab_size: bool = flag(
        True, help=_NO_EFFECT, flags=("--no-pad-vocab-size", "--disable-pad-vocab-size"), group=MODEL_SIDE
    )
    vocab_extra_ids: int = flag(
        0, help="Megatron-LM's T5 span-masking tokens: only 0 (none) is supported", group=MODEL_SIDE
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument_group(INPUT)  # first, before the tokenizer's group
    add_tokenizer_args(p, null_tokenizer=True)
    for flags in (DataVocabulary, PreprocessConfig, WorkerSearch, MegatronCompatibility):
        add_flags(p, flags)
    in_help_order(p)
    args = p.parse_args(argv)
    if args.split_sentences:
        p.error(
            "--split-sentences is not supported: it needs NLTK's punkt data downloaded at run time. Give each "
            "document's value as a list of strings (pre-split sentences): each becomes one sequence, as Megatron "
            "writes them"
        )
    if args.vocab_extra_ids:
        p.error("--vocab-extra-ids: only 0 is supported (extra ids are T5 span-masking tokens; this is a GPT stack)")
    if args.workers < 1 or args.threads_per_worker < 1:
        p.error("--workers and --threads-per-worker must be at least 1")
    if not 0 <= args.shard_index < args.num_shards:
        p.error(f"--shard-index {args.shard_index} of --num-shards {args.num_shards}: need 0 <= index < num-shards")
    if args.find_optimal_num_workers:
        if args.num_shards > 1:
            p.error("--find-optimal-num-workers times the whole input's first documents: give it without --num-shards")
        if any(w < 1 for w in args.workers_to_check):
            p.error(f"--workers-to-check {' '.join(map(str, args.workers_to_check))}: counts must be at least 1")
        args.max_documents = 100_000 if args.max_documents is None else args.max_documents
        if args.max_documents < 1:
            p.error("--max-documents must be at least 1")
    elif args.max_documents is not None:
        p.error(
            "--max-documents only sets the size of each --find-optimal-num-workers trial (as in Megatron-LM); "
            "to pack part of a corpus, give a part of it as --input, or use --num-shards/--shard-index"
        )
    if args.use_gigatoken and args.no_native_tokenizer:
        p.error("--use-gigatoken asks for a native encoder and --no-native-tokenizer for the library: give one")
    spec = TokenizerSpec.from_args(args)
    if spec is None:  # add_tokenizer_args leaves this check to the tool: NullTokenizer names no file
        p.error(
            "one of the arguments --tokenizer-model --vocab-file is required (no file: --tokenizer-type NullTokenizer)"
        )
    args.tokenizer = dataclasses.replace(spec, vocab_size=args.vocab_size)
    return args


def print_summary(result: PreprocessResult) -> None:
    s, seconds = result.stats, max(result.seconds, 1e-9)
    total_tokens = sum(s.tokens.values())
    lines = [
        "",
        "preprocess_data summary",
        f"  inputs           {len(result.files)} file(s), {s.bytes / 2**20:,.1f} MiB, {result.shards} shard(s)",
        f"  tokenizer        {result.tokenizer}",
        f"  documents        {s.documents:,}"
        + (f"  (+{s.blank_lines:,} blank lines ignored)" if s.blank_lines else ""),
        f"  tokens           {total_tokens:,}",
        f"  time             {seconds:,.1f} s: {s.documents / seconds:,.0f} docs/s, {total_tokens / seconds:,.0f} tokens/s, "
        f"{s.bytes / 2**20 / seconds:,.2f} MB/s",
    ]
    if s.bad_lines.total:
        lines.append(
            f"  skipped lines    {s.bad_lines.total:,}: "
            + ", ".join(f"{k} {n:,}" for k, n in sorted(s.bad_lines.counts.items()))
        )
        lines += [f"    e.g. {example}" for example in s.bad_lines.examples]
    for key, prefix in result.outputs.items():
        size = os.path.getsize(prefix + ".bin") + os.path.getsize(prefix + ".idx")
        empty = s.empty_documents.get(key, 0)
        lines.append(
            f"  [{key}] {prefix}.{{bin,idx}}  {s.tokens.get(key, 0):,} tokens, {size / 2**20:,.1f} MiB"
            + (f", {empty:,} empty document(s) kept as Megatron does" if empty else "")
        )
    lines.append("")
    lines.append("Use in training:")
    for prefix in result.outputs.values():
        lines.append(f"  --data-path {prefix}")
    print("\n".join(lines))


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if args.partitions != 1:
        print(
            f"note: --partitions {args.partitions} ignored: {args.workers} worker(s) split the input by byte ranges "
            f"and the parts are merged natively",
            file=sys.stderr,
        )
    if args.use_gigatoken:
        print(
            "note: --use-gigatoken: tokenizing with our native encoder, not GigaToken (same ids as the reference "
            "library; measured against GigaToken in docs/preprocess.md#native-tokenizers)",
            file=sys.stderr,
        )
    config = config_from_args(PreprocessConfig, args, tokenizer=args.tokenizer)
    try:
        if args.find_optimal_num_workers:
            print_worker_search(find_optimal_workers(config, args.workers_to_check, args.max_documents))
            return 0
        result = preprocess(config)
    except (UserError, OSError) as e:  # OSError: no space left, unwritable output (named)
        return report_error(e)
    print_summary(result)
    if args.num_shards > 1:
        print(
            f"\nShard {args.shard_index} of {args.num_shards}. When every shard is done, merge them in shard order "
            f"(one directory per JSON key; zero-padded shard numbers in the prefixes keep the order):\n"
            f"  python tools/merge_datasets.py --input <directory of the shards' .bin/.idx> --output-prefix <prefix>"
        )
    return 0


def print_worker_search(results) -> None:
    """Megatron-LM's report of --find-optimal-num-workers."""
    lines = ["", "-----------------------------------", "Performance results (fastest → slowest):"]
    lines += [f"{i}. {workers} workers → avg. docs/s: {speed:.4f}" for i, (workers, speed) in enumerate(results, 1)]
    best, speed = results[0]
    lines += [
        "",
        "-----------------------------------",
        f"The most optimal num of workers is {best} with avg. preprocessed docs/s: {speed:.4f}.",
        "-----------------------------------",
        "(nothing was written: run again with --workers N to write the dataset)",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
