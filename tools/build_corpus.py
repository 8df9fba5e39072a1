#!/usr/bin/env python
"""Synthesized collections -> instruction-augmented documents -> the mixed pre-training corpus (JSONL for
tools/preprocess_data.py). Recipes: general, domain, vanilla, mix; see docs/corpus.md."""

from __future__ import annotations

import argparse
import os
import sys

from megatron_ipt.corpus.build import (
    DECONTAMINATION,
    INPUTS,
    MIXING,
    OUTPUT,
    TOKENIZER,
    BuildConfig,
    budget_from_summary,
    build_corpus,
)
from megatron_ipt.corpus.recipes import SOURCES
from megatron_ipt.errors import UserError
from megatron_ipt.flags import add_flags, config_from_args, in_help_order
from megatron_ipt.io.cli import report_error
from megatron_ipt.tokenizers import TokenizerSpec, add_tokenizer_args


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for title in (INPUTS, MIXING, DECONTAMINATION):  # the groups in --help order; BuildConfig fills them
        p.add_argument_group(title)
    add_tokenizer_args(p, title=TOKENIZER)
    p.add_argument_group(OUTPUT)
    add_flags(p, BuildConfig)
    return in_help_order(p).parse_args(argv)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_summary(s: dict, out: str, tokenizer_flags: str) -> str:
    r = s["render"]
    lines = ["", f"build_corpus summary (recipe {s['recipe']})"]
    if "texts:total" in r:
        lines.append(
            f"  converted     {r.get('texts:converted', 0):,} of {r['texts:total']:,} texts "
            f"({_pct(r.get('texts:converted', 0) / max(r['texts:total'], 1))}) in {r.get('collections', 0):,} collections"
        )
    kinds = ("basic", "options", "cot", "options_cot")
    for prefix, label in (("", "pairs"), ("tuning ", "tuning pairs")):
        kept = {k: r.get(f"{prefix}pairs:{k}", 0) for k in kinds}
        dropped = {k.split(":", 1)[1]: v for k, v in r.items() if k.startswith(f"{prefix}dropped:")}
        if sum(kept.values()) or dropped:
            lines.append(
                f"  {label:<13} kept {sum(kept.values()):,} ("
                + ", ".join(f"{k} {v:,}" for k, v in kept.items())
                + f"); dropped {sum(dropped.values()):,}"
                + "".join(f", {k} {v:,}" for k, v in dropped.items())
            )
    modes = ("classic", "dialog", "numbered", "inline", "next_turn")
    if any(r.get(f"layout:{m}") for m in modes):
        lines.append(
            "  layouts       "
            + ", ".join(f"{m} {r.get(f'layout:{m}', 0):,}" for m in modes)
            + f" (inverted {r.get('layout:inverted', 0):,})"
        )
    lines.append(f"  {'source':<20} {'documents':>10} {'tokens':>14} {'share':>7}   pool documents / tokens")
    for source in SOURCES:
        f = s["sources"][source]
        if f["pool_documents"] or f["documents"]:
            lines.append(
                f"  {source:<20} {f['documents']:>10,} {f['tokens']:>14,} {_pct(f['share']):>7}   "
                f"{f['pool_documents']:,} / {f['pool_tokens']:,}"
            )
    lines.append(f"  {'total':<20} {s['documents']:>10,} {s['tokens']:>14,}")
    d = s["decontamination"]
    if d:
        counts = {k: v for k, v in d.items() if k not in ("eval_files", "eval_texts", "ngrams", "n")}
        lines.append(
            f"  decontam      {d['eval_texts']:,} evaluation texts in {d['eval_files']} file(s), {d['ngrams']:,} "
            f"{d['n']}-grams; " + (", ".join(f"{k} {v:,}" for k, v in counts.items()) or "nothing overlaps")
        )
    if s["skipped_lines"]:
        lines.append(
            f"  skipped lines {sum(s['skipped_lines'].values()):,}: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(s["skipped_lines"].items()))
        )
    t = s["seconds"]
    lines.append(
        f"  time          {t['total']:.1f} s (read {t['read']:.1f}, decontaminate {t['decontaminate']:.1f}, "
        f"render + count tokens {t['render_and_count']:.1f}, write {t['write']:.1f})"
    )
    lines += s["notes"]
    lines += ["", "Pack it:"]
    if s["data_path"]:
        for name in s["outputs"]:
            prefix = os.path.join(out, name[: -len(".jsonl")])
            lines.append(
                f"  python tools/preprocess_data.py --input {prefix}.jsonl --output-prefix {prefix} "
                f"--json-keys text {tokenizer_flags} --append-eod"
            )
        lines += ["Then train with:", f"  --data-path {s['data_path']}"]
    else:
        lines.append(
            f"  python tools/preprocess_data.py --input '{os.path.join(out, 'corpus-*.jsonl')}' "
            f"--output-prefix {os.path.join(out, 'corpus')} --json-keys text {tokenizer_flags} --append-eod"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    tokenizer = TokenizerSpec.from_args(a)
    try:
        budget = budget_from_summary(a.token_budget_from) if a.token_budget_from else a.token_budget
        cfg = config_from_args(BuildConfig, a, tokenizer=tokenizer, token_budget=budget)
        result = build_corpus(cfg)
    except (UserError, OSError) as e:  # OSError: no space left, unwritable output (named)
        return report_error(e)
    print(format_summary(result.summary, a.output_dir.rstrip("/"), tokenizer.to_flags()))
    for example in result.skipped.examples:
        print(f"    e.g. {example}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
