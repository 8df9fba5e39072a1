#!/usr/bin/env python
"""Synthesized collections -> instruction-augmented documents -> the mixed pre-training corpus (JSONL for
tools/preprocess_data.py). Recipes: general, domain, vanilla, mix; see docs/corpus.md."""

from __future__ import annotations

import argparse
import os
import sys

from megatron_ipt.corpus.build import BuildConfig, budget_from_summary, build_corpus
from megatron_ipt.corpus.decontam import DEFAULT_NGRAM
from megatron_ipt.corpus.recipes import RECIPES, SOURCES
from megatron_ipt.corpus.render import SEED_OFFSET
from megatron_ipt.io.cli import report_error
from megatron_ipt.io.inputs import InputError
from megatron_ipt.tokenizers import TokenizerSpec, add_tokenizer_args


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--recipe",
        required=True,
        choices=RECIPES,
        help="general: convert a fraction of texts, the rest raw (+ tuning data); domain: convert all, "
        "+ general instructions 1:1 by tokens; vanilla: raw only; mix: raw + instruction data",
    )
    g = p.add_argument_group("inputs (a file, a glob, or a directory of JSONL files; .gz/.zst read too)")
    g.add_argument("--collections", help="synthesized collections (tools/synthesize.py --output-dir)")
    g.add_argument("--raw-input", help="raw texts that were not synthesized (general, vanilla, mix)")
    g.add_argument("--text-key", default="text", help="key of the text in --raw-input (default: text)")
    g.add_argument("--tuning-data", help='synthesizer tuning data, {"context", "QA_list"} per line (general, mix)')
    g.add_argument(
        "--general-instructions", help="general instructions JSONL (domain, mix), rendered '{question} {response}'"
    )
    g.add_argument(
        "--instruction-keys",
        nargs=2,
        default=["question", "response"],
        metavar=("QUESTION", "RESPONSE"),
        help="keys of the question and the response in --general-instructions (default: question response)",
    )
    g.add_argument(
        "--skip-bad-lines", action="store_true", help="skip and count unusable input lines instead of stopping"
    )
    g = p.add_argument_group("mixing")
    g.add_argument(
        "--convert-fraction",
        type=float,
        default=0.2,
        help="general: fraction of all texts rendered with their pairs (paper: 0.2); the rest stay raw",
    )
    g.add_argument(
        "--tuning-upsample",
        type=float,
        default=1.0,
        help="times the tuning data is repeated, each copy with fresh templates (paper's value unpublished)",
    )
    g.add_argument(
        "--instruction-ratio",
        type=float,
        default=1.0,
        help="general-instruction tokens per token of the other data (domain: paper 1.0)",
    )
    budget = g.add_mutually_exclusive_group()
    budget.add_argument(
        "--token-budget", type=int, help="total tokens of the mixed output; every source is scaled by one factor"
    )
    budget.add_argument(
        "--token-budget-from",
        metavar="SUMMARY",
        help="the token count of an earlier build (its summary.json or directory): baselines on the same budget",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=SEED_OFFSET,
        help=f"collection i is rendered with seed+i; also seeds selection and shuffling (default {SEED_OFFSET})",
    )
    g = p.add_argument_group("decontamination")
    g.add_argument(
        "--eval-sets",
        nargs="+",
        default=[],
        help="evaluation sets: JSONL (one example per line) or plain text (one per line); files, globs or dirs",
    )
    g.add_argument("--eval-keys", nargs="+", help="JSONL keys holding an example's text (default: every string in it)")
    g.add_argument(
        "--ngram-size",
        type=int,
        default=DEFAULT_NGRAM,
        help=f"overlap length in normalized words (default {DEFAULT_NGRAM})",
    )
    g.add_argument(
        "--keep-flagged-texts",
        action="store_true",
        help="keep texts that overlap an evaluation set (only report them); overlapping pairs are always dropped",
    )
    g = add_tokenizer_args(p, title="tokenizer (token counts, as tools/preprocess_data.py will count them)")
    g.add_argument("--threads", type=int, default=1, help="tokenizer threads")
    g = p.add_argument_group("output")
    g.add_argument("--output-dir", required=True)
    g.add_argument(
        "--per-source-outputs",
        action="store_true",
        help="one {source}.jsonl per source and the --data-path weights to blend them in training",
    )
    g.add_argument("--docs-per-shard", type=int, default=100_000, help="documents per corpus-NNNNN.jsonl shard")
    g.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty --output-dir (after the new corpus is complete)"
    )
    return p.parse_args(argv)


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
        cfg = BuildConfig(
            recipe=a.recipe,
            output_dir=a.output_dir,
            tokenizer=tokenizer,
            collections=a.collections,
            raw_input=a.raw_input,
            text_key=a.text_key,
            tuning_data=a.tuning_data,
            general_instructions=a.general_instructions,
            instruction_keys=tuple(a.instruction_keys),
            convert_fraction=a.convert_fraction,
            tuning_upsample=a.tuning_upsample,
            instruction_ratio=a.instruction_ratio,
            token_budget=budget,
            seed=a.seed,
            per_source_outputs=a.per_source_outputs,
            docs_per_shard=a.docs_per_shard,
            overwrite=a.overwrite,
            skip_bad_lines=a.skip_bad_lines,
            eval_sets=a.eval_sets,
            eval_keys=a.eval_keys,
            ngram=a.ngram_size,
            keep_flagged_texts=a.keep_flagged_texts,
            threads=a.threads,
        )
        result = build_corpus(cfg)
    except (InputError, OSError, ValueError) as e:  # OSError: no space left, unwritable output (named)
        return report_error(e)
    print(format_summary(result.summary, a.output_dir.rstrip("/"), tokenizer.to_flags()))
    for example in result.skipped.examples:
        print(f"    e.g. {example}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
