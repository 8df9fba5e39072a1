#!/usr/bin/env python
"""Build the instruction synthesizer's tuning data: the collection's rows (or your own) rendered in the synthesizer's
wire format, same-dataset examples packed few-shot into sequences, tokens + loss mask as Megatron .bin/.idx.
`make-standin` writes a small stand-in collection from the embedded corpus (rules-mined pairs; CPU demos and tests).
See docs/tuning.md."""

from __future__ import annotations

import argparse
import os
import sys

from megatron_ipt.errors import UserError
from megatron_ipt.flags import add_flags, config_from_args, in_help_order
from megatron_ipt.io.atomic import check_writable_dir
from megatron_ipt.io.cli import report_error
from megatron_ipt.tokenizers import TokenizerSpec, add_tokenizer_args
from megatron_ipt.tuning.sequences import (
    DECONTAMINATION,
    INPUT,
    OUTPUT,
    PACKING,
    TOKENIZER,
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
    for title in (INPUT, DECONTAMINATION):  # the groups in --help order; TuningDataConfig fills them
        p.add_argument_group(title)
    add_tokenizer_args(p, title=TOKENIZER)
    for title in (PACKING, OUTPUT):
        p.add_argument_group(title)
    add_flags(p, TuningDataConfig)
    in_help_order(p)
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
        except (UserError, OSError) as e:  # OSError: an existing non-stand-in dir, no space left (named)
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
        cfg = config_from_args(TuningDataConfig, a, tokenizer=spec)
        check_writable_dir(os.path.dirname(os.path.abspath(a.output_prefix)))  # before the work, not after it
        summary = build_tuning_data(cfg)
    except (UserError, OSError) as e:  # OSError: missing input, unwritable output, no space left
        return report_error(e)
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
