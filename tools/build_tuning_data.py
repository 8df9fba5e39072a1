#!/usr/bin/env python
"""Build the instruction synthesizer's tuning data: the collection's rows (or your own) rendered in the synthesizer's
wire format, same-dataset examples packed few-shot into sequences, tokens + loss mask as Megatron .bin/.idx.
`make-standin` writes a small stand-in collection from the embedded corpus (rules-mined pairs; CPU demos and tests).
See docs/tuning.md."""

from __future__ import annotations

import argparse
import os
import sys

from megatron_ipt.corpus.decontam import DEFAULT_NGRAM
from megatron_ipt.io.atomic import check_writable_dir
from megatron_ipt.io.cli import report_error
from megatron_ipt.io.inputs import InputError
from megatron_ipt.tokenizers import TokenizerSpec, add_tokenizer_args
from megatron_ipt.tuning.data import (
    DEFAULT_MAX_EXAMPLES,
    DEFAULT_SEQ_LENGTH,
    SPLITS,
    TuningDataConfig,
    build_tuning_data,
)
from megatron_ipt.tuning.standin import make_standin

STANDIN = "make-standin"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__,
        epilog=f"Stand-in collection: tools/build_tuning_data.py {STANDIN} --help",
        allow_abbrev=False,
    )
    g = p.add_argument_group("input data")
    g.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="collection dataset folders (<Dataset>/shard/*.jsonl + json/{train,valid}.json), the collection's root, "
        "or JSONL files of rows (files, globs, directories)",
    )
    g.add_argument(
        "--split", choices=SPLITS, default="train", help="which manifest of each dataset folder to read (default train)"
    )
    g.add_argument(
        "--max-examples-per-dataset",
        type=int,
        default=DEFAULT_MAX_EXAMPLES,
        help="at most this many distinct rows per dataset, those with the most pairs first, ties in a seeded order "
        f"(the paper: 10K; default {DEFAULT_MAX_EXAMPLES}; 0: all)",
    )
    g.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip and count bad rows (malformed JSON, a missing or mistyped field, a pair the synthesizer's parser "
        "would not give back) instead of stopping with an error",
    )
    g = p.add_argument_group("decontamination (the corpus stage's n-gram check)")
    g.add_argument(
        "--decontaminate",
        nargs="+",
        default=[],
        metavar="EVAL_FILES",
        help="evaluation sets: JSONL (one example per line) or plain text (one per line); files, globs or dirs. "
        "Pairs that overlap are dropped, and rows whose context overlaps",
    )
    g.add_argument("--eval-keys", nargs="+", help="JSONL keys holding an example's text (default: every string in it)")
    g.add_argument(
        "--ngram-size",
        type=int,
        default=DEFAULT_NGRAM,
        help=f"overlap length in normalized words (default {DEFAULT_NGRAM})",
    )
    add_tokenizer_args(
        p,
        title="tokenizer (the synthesizer's: the model's own tokenizer.json directory or SentencePiece model; "
        "nothing is added to the wire text, as the synthesis engines tokenize it)",
    )
    g = p.add_argument_group("packing")
    g.add_argument(
        "--seq-length",
        type=int,
        default=DEFAULT_SEQ_LENGTH,
        help=f"training sequence length; a packed sequence holds up to seq-length + 1 tokens (default {DEFAULT_SEQ_LENGTH}, "
        "the released synthesizer's context)",
    )
    g.add_argument("--seed", type=int, default=1234, help="sampling ties, weights, packing order (default 1234)")
    g = p.add_argument_group("output data")
    g.add_argument(
        "--output-prefix",
        required=True,
        help="writes {prefix}_text_document.{bin,idx}, {prefix}_loss_mask_document.{bin,idx} and {prefix}.tuning.json",
    )
    return p.parse_args(argv)


def parse_standin_args(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=f"build_tuning_data.py {STANDIN}",
        description="Write a STAND-IN tuning collection (not the paper's data) in the collection's layout: the "
        "embedded corpus (pydoc topics, Opticks) cut into pieces, pairs mined by the rules engine, one pseudo-dataset "
        "per source, whole documents held out (their rows in the valid split, their text in heldout.jsonl).",
    )
    p.add_argument("--output-dir", required=True)
    p.add_argument("--seed", type=int, default=1234, help="held-out documents and option order (default 1234)")
    p.add_argument("--holdout-fraction", type=float, default=0.1, help="documents held out per source (default 0.1)")
    p.add_argument("--max-words", type=int, default=200, help="words per context piece at most (default 200)")
    p.add_argument("--max-pairs", type=int, default=6, help="pairs mined per piece at most (default 6)")
    p.add_argument("--overwrite", action="store_true", help="replace a stand-in collection already in --output-dir")
    return p.parse_args(argv)


def format_summary(s: dict) -> str:
    t = s["totals"]
    lines = ["", "build_tuning_data summary" + (" (STAND-IN collection)" if s["stand_in"] else "")]
    head = f"  {'dataset':<24} {'rows':>8} {'selected':>9} {'examples':>9} {'too long':>9} {'sequences':>10} {'tokens':>12} {'loss tokens':>12}"
    lines.append(head)
    for name, d in list(s["datasets"].items()) + [("total", t)]:
        lines.append(
            f"  {name:<24} {d.get('rows_read', 0):>8,} {d.get('rows_selected', 0):>9,} {d.get('examples', 0):>9,} "
            f"{d.get('too_long', 0):>9,} {d.get('sequences', 0):>10,} {d.get('tokens', 0):>12,} {d.get('loss_tokens', 0):>12,}"
        )
    kinds = {k.split(":", 1)[1]: v for k, v in t.items() if k.startswith("pairs:")}
    lines.append("  pairs         " + ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items())))
    for key, label in (
        ("rows_without_pairs", "rows without pairs"),
        ("rows_weighted_out", "rows left out by a weight < 1"),
        ("rows_decontaminated", "rows dropped by decontamination"),
        ("pairs_decontaminated", "pairs dropped by decontamination"),
        ("prompt_boundary_split", "examples tokenized as prompt + pairs apart"),
    ):
        if t.get(key):
            lines.append(f"  {label}: {t[key]:,}")
    if s["skipped_lines"]:
        lines.append(
            f"  skipped lines {sum(s['skipped_lines'].values()):,}: "
            + ", ".join(f"{k} {v:,}" for k, v in s["skipped_lines"].items())
        )
        lines += [f"    e.g. {e}" for e in s["skipped_line_examples"]]
    o = s["outputs"]
    lines += [
        f"  wrote         {o['text']}.{{bin,idx}} ({o['dtype']}), {o['loss_mask']}.{{bin,idx}} (uint8), "
        f"in {s['seconds']['total']:.1f} s",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [STANDIN]:
        a = parse_standin_args(argv[1:])
        try:
            s = make_standin(a.output_dir, a.seed, a.holdout_fraction, a.max_words, a.max_pairs, a.overwrite)
        except (OSError, ValueError) as e:  # OSError: an existing non-stand-in dir, no space left (named)
            return report_error(e, has_skip_flag=False)
        for name, d in s["datasets"].items():
            print(
                f"{name}: {d['train_rows']:,} train rows ({d['train_pairs']:,} pairs), {d['valid_rows']:,} valid rows; "
                f"{d['heldout_documents']} of {d['documents']} documents held out"
            )
        print(f"wrote a STAND-IN collection to {a.output_dir} ({s['heldout_pieces']} held-out texts in heldout.jsonl)")
        return 0
    a = parse_args(argv)
    spec = TokenizerSpec.from_args(a)
    try:
        cfg = TuningDataConfig(
            inputs=a.input,
            output_prefix=a.output_prefix,
            tokenizer=spec,
            seq_length=a.seq_length,
            max_examples_per_dataset=a.max_examples_per_dataset,
            split=a.split,
            seed=a.seed,
            eval_sets=a.decontaminate,
            eval_keys=a.eval_keys,
            ngram=a.ngram_size,
            skip_bad_lines=a.skip_bad_lines,
        )
        check_writable_dir(os.path.dirname(os.path.abspath(a.output_prefix)))  # before the work, not after it
        summary = build_tuning_data(cfg)
    except (InputError, OSError, ValueError) as e:  # OSError: missing input, unwritable output, no space left
        return report_error(e)
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
