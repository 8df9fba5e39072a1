#!/usr/bin/env python
"""Tokenize JSONL into Megatron `.bin/.idx` datasets. Megatron-LM's flags and output names; see docs/preprocess.md."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from megatron_ipt.data.preprocess import PreprocessConfig, PreprocessResult, preprocess
from megatron_ipt.data.tokenizer import TokenizerSpec, add_tokenizer_args
from megatron_ipt.io.cli import report_error
from megatron_ipt.io.inputs import InputError


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    g = p.add_argument_group("input data")
    g.add_argument("--input", required=True, help="a JSONL file, a glob, or a directory; plain, .gz or .zst")
    g.add_argument("--json-keys", nargs="+", default=["text"], help="keys to extract from each line (default: text)")
    g.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip lines with malformed JSON, a missing key, a non-string value or invalid UTF-8, "
        "and count them, instead of stopping with an error",
    )
    g = add_tokenizer_args(p)
    g.add_argument(
        "--append-eod", action="store_true", help="append the end-of-document token to every non-empty document"
    )
    g = p.add_argument_group("output data")
    g.add_argument("--output-prefix", required=True, help="outputs are {prefix}_{key}_document.{bin,idx}")
    g = p.add_argument_group("runtime")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    g.add_argument(
        "--threads-per-worker",
        type=int,
        default=1,
        help="tokenizer threads inside each worker process (SentencePiece models; the GIL is released), "
        "e.g. --workers 1 --threads-per-worker 8 tokenizes on 8 cores from one process",
    )
    g.add_argument(
        "--shard-bytes",
        type=int,
        default=None,
        help="size of the byte-range work units plain files are cut into when --workers > 1 "
        "(default: input size / (4 x workers), at least 8 MiB)",
    )
    g.add_argument(
        "--log-interval", type=int, default=1000, help="documents between progress lines when not on a terminal"
    )
    g.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="accepted for Megatron-LM compatibility; not needed: workers split inputs by byte ranges",
    )
    g.add_argument(
        "--split-sentences",
        action="store_true",
        help="not supported (Megatron-LM's NLTK punkt splitting); give each document as a list of strings instead",
    )
    g.add_argument(
        "--keep-sequential-samples",
        action="store_true",
        help="accepted for Megatron-LM compatibility; output order always equals input order",
    )
    args = p.parse_args(argv)
    if args.split_sentences:
        p.error(
            "--split-sentences is not supported: it needs NLTK's punkt data downloaded at run time. Give each "
            "document's value as a list of strings (pre-split sentences): each becomes one sequence, as Megatron "
            "writes them"
        )
    if args.workers < 1 or args.threads_per_worker < 1:
        p.error("--workers and --threads-per-worker must be at least 1")
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
    config = PreprocessConfig(
        input=args.input,
        output_prefix=args.output_prefix,
        tokenizer=TokenizerSpec.from_args(args),
        json_keys=args.json_keys,
        append_eod=args.append_eod,
        workers=args.workers,
        log_interval=args.log_interval,
        skip_bad_lines=args.skip_bad_lines,
        shard_bytes=args.shard_bytes,
        threads_per_worker=args.threads_per_worker,
    )
    try:
        result = preprocess(config)
    except (InputError, FileNotFoundError, ValueError) as e:
        return report_error(e)
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
