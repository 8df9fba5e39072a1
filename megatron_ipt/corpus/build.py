"""tools/build_corpus.py's work: read inputs, decontaminate, apply a recipe, write the corpus atomically.

Output directory (written as ``OUT.{pid}@{host}.tmp`` and published with megatron_ipt.io.atomic when complete,
so a half-written corpus never carries the final name; see "Reliability" in docs/corpus.md):
- mixed (default): ``corpus-00000.jsonl`` ... (``docs_per_shard`` lines each), every line
  ``{"text": ..., "source": "augmented" | "raw" | "tuning" | "general_instruction"}``, shuffled across sources;
- ``per_source_outputs``: ``{source}.jsonl`` with each source's documents once, and the ``--data-path``
  weights (token shares of the recipe) to blend them at training time;
- ``summary.json`` (figures below; ``--token-budget-from`` reads its ``tokens``; ``incomplete_synthesis``: what
  an unfinished synthesis built with ``--allow-incomplete-synthesis`` lacks) and, with evaluation sets,
  ``decontam-flagged.jsonl`` (one line per dropped or flagged item, with the overlapping words).
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence, Tuple

import orjson

from megatron_ipt.errors import ConfigError
from megatron_ipt.flags import Alias, flag
from megatron_ipt.formats.records import Document
from megatron_ipt.io.atomic import (
    check_writable_dir,
    clean_once,
    fsync_dir,
    fsync_file,
    naming,
    owned_path,
    publish,
    remove_path,
)
from megatron_ipt.io.jsonl import BadLines
from megatron_ipt.tokenizers import TokenizerSpec

from . import decontam
from .reader import read_collections, read_instructions, read_texts, read_tuning, unfinished_synthesis
from .recipes import RECIPES, Inputs, RecipeConfig, build_pools, mix
from .render import SEED_OFFSET

SUMMARY = "summary.json"
FLAGGED = "decontam-flagged.jsonl"
PAPER_ROUNDS = {"general": 2, "domain": 3}


# The argument groups of tools/build_corpus.py's --help (the tool makes them in this order)
INPUTS = "inputs (a file, a glob, or a directory of JSONL files; .gz/.zst read too)"
MIXING = "mixing"
DECONTAMINATION = "decontamination"
TOKENIZER = "tokenizer (token counts, as tools/preprocess_data.py will count them)"
OUTPUT = "output"


@dataclass
class BuildConfig:
    """One corpus build; each field but the tokenizer is a flag of tools/build_corpus.py. The field order is the
    order of summary.json's settings."""

    recipe: str = flag(
        help="general: convert a fraction of texts, the rest raw (+ tuning data); domain: convert all, "
        "+ general instructions 1:1 by tokens; vanilla: raw only; mix: raw + instruction data",
        required=True,
        field_required=True,
        choices=RECIPES,
    )
    output_dir: str = flag(help=None, required=True, field_required=True, group=OUTPUT)
    tokenizer: TokenizerSpec
    collections: Optional[str] = flag(
        None, help="synthesized collections (tools/synthesize.py --output-dir)", group=INPUTS
    )
    raw_input: Optional[str] = flag(
        None, help="raw texts that were not synthesized (general, vanilla, mix)", group=INPUTS
    )
    text_key: str = flag("text", help="key of the text in --raw-input (default: text)", group=INPUTS)
    tuning_data: Optional[str] = flag(
        None, help='synthesizer tuning data, {"context", "QA_list"} per line (general, mix)', group=INPUTS
    )
    general_instructions: Optional[str] = flag(
        None, help="general instructions JSONL (domain, mix), rendered '{question} {response}'", group=INPUTS
    )
    instruction_keys: Tuple[str, ...] = flag(
        ("question", "response"),
        help="keys of the question and the response in --general-instructions (default: question response)",
        nargs=2,
        metavar=("QUESTION", "RESPONSE"),
        group=INPUTS,
    )
    convert_fraction: float = flag(
        0.2,
        help="general: fraction of all texts rendered with their pairs (paper: 0.2); the rest stay raw",
        group=MIXING,
    )
    tuning_upsample: float = flag(
        1.0,
        help="times the tuning data is repeated, each copy with fresh templates (paper's value unpublished)",
        group=MIXING,
    )
    instruction_ratio: float = flag(
        1.0, help="general-instruction tokens per token of the other data (domain: paper 1.0)", group=MIXING
    )
    token_budget: Optional[int] = flag(
        None,
        help="total tokens of the mixed output; every source is scaled by one factor",
        group=MIXING,
        exclusive="budget",
        aliases=[
            Alias(
                "--token-budget-from",
                dest="token_budget_from",
                metavar="SUMMARY",
                help="the token count of an earlier build (its summary.json or directory): baselines on the same "
                "budget",
            )
        ],
    )
    seed: int = flag(
        SEED_OFFSET,
        help=f"collection i is rendered with seed+i; also seeds selection and shuffling (default {SEED_OFFSET})",
        group=MIXING,
    )
    per_source_outputs: bool = flag(
        False,
        help="one {source}.jsonl per source and the --data-path weights to blend them in training",
        group=OUTPUT,
    )
    docs_per_shard: int = flag(100_000, help="documents per corpus-NNNNN.jsonl shard", group=OUTPUT)
    overwrite: bool = flag(
        False, help="replace a non-empty --output-dir (after the new corpus is complete)", group=OUTPUT
    )
    skip_bad_lines: bool = flag(False, help="skip and count unusable input lines instead of stopping", group=INPUTS)
    allow_incomplete_synthesis: bool = flag(
        False,
        help="build from the parts of a --collections synthesis that is not finished (its manifests list parts "
        "not done) instead of refusing it; the summary says how much is missing",
        group=INPUTS,
    )
    eval_sets: Sequence[str] = flag(
        (),
        help="evaluation sets: JSONL (one example per line) or plain text (one per line); files, globs or dirs",
        group=DECONTAMINATION,
    )
    eval_keys: Optional[Sequence[str]] = flag(
        None, help="JSONL keys holding an example's text (default: every string in it)", group=DECONTAMINATION
    )
    ngram: int = flag(
        decontam.DEFAULT_NGRAM,
        help=f"overlap length in normalized words (default {decontam.DEFAULT_NGRAM})",
        flags=["--ngram-size"],
        metavar="NGRAM_SIZE",
        group=DECONTAMINATION,
    )
    keep_flagged_texts: bool = flag(
        False,
        help="keep texts that overlap an evaluation set (only report them); overlapping pairs are always dropped",
        group=DECONTAMINATION,
    )
    threads: int = flag(1, help="tokenizer threads", group=TOKENIZER)


@dataclass
class BuildResult:
    summary: dict
    notes: List[str] = field(default_factory=list)
    skipped: BadLines = None


def _check_output_dir(path: str, overwrite: bool):
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)) and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty; pass --overwrite to replace it")


def _rounds_note(spec: str, recipe: str) -> Optional[str]:
    """The paper synthesizes M=2 rounds for from-scratch and M=3 for domain corpora; say so if the synthesis
    manifests next to the collections record another number."""
    if recipe not in PAPER_ROUNDS or not spec or not os.path.isdir(spec):
        return None
    rounds = set()
    for path in glob.glob(os.path.join(spec, "**", "manifest-shard*.json"), recursive=True):
        try:
            rounds.add(json.load(open(path)).get("rounds"))
        except (OSError, ValueError):
            continue
    rounds.discard(None)
    want = PAPER_ROUNDS[recipe]
    if rounds and rounds != {want}:
        return f"note: collections were synthesized with --rounds {sorted(rounds)}; the paper uses {want} for the {recipe} recipe"
    return None


def _summary_config(cfg: BuildConfig) -> dict:
    """The settings summary.json records; the tokenizer's under the flat keys summary.json has always used."""
    config = {}
    for key, value in asdict(cfg).items():
        if key == "tokenizer":
            t = cfg.tokenizer
            config.update(
                tokenizer_type=t.type,
                tokenizer_model=t.model,
                include_special_tokens=t.include_special_tokens,
                tiktoken_pattern=t.tiktoken_pattern,
            )
        elif key not in ("output_dir", "overwrite"):
            config[key] = value
    return config


def _write_lines(path: str, lines, shown: str):
    """Write `lines` to `path` (in the temporary directory); a failed write names `shown`, the final file."""
    with naming(shown), open(path, "wb") as f:
        for line in lines:
            f.write(line)


def _json_line(record: dict) -> bytes:
    return orjson.dumps(record) + b"\n"


def read_inputs(cfg: BuildConfig, bad: BadLines) -> Inputs:
    return Inputs(
        collections=read_collections(cfg.collections, bad) if cfg.collections else [],
        raw_texts=read_texts(cfg.raw_input, cfg.text_key, bad) if cfg.raw_input else [],
        tuning=read_tuning(cfg.tuning_data, bad) if cfg.tuning_data else [],
        instructions=read_instructions(cfg.general_instructions, cfg.instruction_keys, bad)
        if cfg.general_instructions
        else [],
    )


def build_corpus(cfg: BuildConfig) -> BuildResult:
    t0 = time.perf_counter()
    recipe = RecipeConfig(
        cfg.recipe, cfg.convert_fraction, cfg.tuning_upsample, cfg.instruction_ratio, cfg.token_budget, cfg.seed
    )
    recipe.check(bool(cfg.raw_input), bool(cfg.tuning_data), bool(cfg.general_instructions))
    if cfg.recipe in ("general", "domain") and not cfg.collections:
        raise ConfigError(f"recipe {cfg.recipe!r} renders synthesized collections: give --collections")
    if not (cfg.collections or cfg.raw_input):
        raise ConfigError("give --collections and/or --raw-input")
    if cfg.per_source_outputs and cfg.token_budget:
        raise ConfigError(
            "--token-budget sizes the mixed output; with --per-source-outputs the training run's "
            "sample count sets the budget and the printed weights set the shares"
        )
    if cfg.docs_per_shard < 1:
        raise ConfigError("--docs-per-shard must be at least 1")
    _check_output_dir(cfg.output_dir, cfg.overwrite)
    out = cfg.output_dir.rstrip("/") or "/"
    parent = os.path.dirname(os.path.abspath(out))
    check_writable_dir(parent)  # before the work, not after it
    clean_once(parent)  # what killed runs left: their `OUT.{pid}@{host}.tmp` directories
    # a synthesis still running or killed: refused (naming its missing parts) unless asked for what is there
    missing = unfinished_synthesis(cfg.collections, cfg.allow_incomplete_synthesis)
    tokenizer = cfg.tokenizer.build(cfg.threads)
    notes = [n for n in [_rounds_note(cfg.collections, cfg.recipe)] if n]
    if missing:
        texts = "an unknown number of" if missing["texts_missing"] is None else f"{missing['texts_missing']:,}"
        notes.append(
            f"warning: built from an unfinished synthesis (--allow-incomplete-synthesis): {texts} texts of "
            f"{missing['shards']} shard(s) missing; {missing['detail']}"
        )

    bad = BadLines(skip=cfg.skip_bad_lines)
    inputs = read_inputs(cfg, bad)
    t_read = time.perf_counter()
    report = None
    if cfg.eval_sets:
        ngrams = decontam.load_eval_sets(cfg.eval_sets, cfg.eval_keys, cfg.ngram)
        inputs, report = decontam.decontaminate(inputs, ngrams, drop_texts=not cfg.keep_flagged_texts)
    t_decontam = time.perf_counter()
    stats = Counter()
    pools = build_pools(recipe, inputs, tokenizer, stats)
    t_pools = time.perf_counter()
    wanted = round(cfg.convert_fraction * stats["texts:total"])
    if cfg.recipe == "general" and stats["texts:converted"] < wanted:
        notes.append(
            f"note: {wanted:,} texts should be converted but the collections hold only "
            f"{stats['texts:converted']:,}: synthesize more of the raw texts"
        )

    tmp = owned_path(out)
    remove_path(tmp)
    os.makedirs(tmp)
    try:
        outputs, data_path = [], None
        if cfg.per_source_outputs:
            figures = {
                s: {
                    "documents": len(p.texts),
                    "tokens": p.total,
                    "pool_documents": len(p.texts),
                    "pool_tokens": p.total,
                    "target_tokens": p.target,
                }
                for s, p in pools.items()
            }
            weights = {s: p.target for s, p in pools.items() if p.texts and p.target > 0}
            total_weight = sum(weights.values())
            for source, f in figures.items():
                f["share"] = weights.get(source, 0.0) / total_weight if total_weight else 0.0
            for source in weights:
                name = f"{source}.jsonl"
                _write_lines(
                    os.path.join(tmp, name),
                    (_json_line(Document(t, source).to_json()) for t in pools[source].texts),
                    os.path.join(out, name),
                )
                outputs.append(name)
            data_path = " ".join(f"{figures[s]['share']:.6f} {os.path.join(out, s)}_text_document" for s in weights)
        else:
            order, figures = mix(pools, cfg.seed)
            for shard, start in enumerate(range(0, len(order), cfg.docs_per_shard)):
                name = f"corpus-{shard:05d}.jsonl"
                chunk = order[start : start + cfg.docs_per_shard]
                _write_lines(
                    os.path.join(tmp, name),
                    (_json_line(Document(pools[s].texts[i], s).to_json()) for s, i in chunk),
                    os.path.join(out, name),
                )
                outputs.append(name)
        if report is not None:
            _write_lines(
                os.path.join(tmp, FLAGGED), (_json_line(r) for r in report.flagged), os.path.join(out, FLAGGED)
            )
        seconds = time.perf_counter() - t0
        summary = {
            "recipe": cfg.recipe,
            "config": _summary_config(cfg),
            "tokenizer": f"{cfg.tokenizer.type} {cfg.tokenizer.model}",
            "sources": figures,
            "documents": sum(f["documents"] for f in figures.values()),
            "tokens": sum(f["tokens"] for f in figures.values()),
            "outputs": outputs,
            "data_path": data_path,
            "render": dict(sorted(stats.items())),
            "decontamination": None
            if report is None
            else {
                "eval_files": len(ngrams.files),
                "eval_texts": ngrams.texts,
                "ngrams": ngrams.ngrams,
                "n": ngrams.n,
                **dict(sorted(report.counts.items())),
            },
            "skipped_lines": dict(bad.counts),
            # None: every synthesis run under --collections is finished (or none is described there)
            "incomplete_synthesis": missing,
            "seconds": {
                "read": t_read - t0,
                "decontaminate": t_decontam - t_read,
                "render_and_count": t_pools - t_decontam,
                "write": seconds - (t_pools - t0),
                "total": seconds,
            },
            "notes": notes,
        }
        _write_lines(os.path.join(tmp, SUMMARY), [json.dumps(summary, indent=1).encode()], os.path.join(out, SUMMARY))
        _fsync_tree(tmp)
    except BaseException:
        remove_path(tmp)
        raise
    publish([(tmp, out)])  # the old corpus is deleted only once the new one has its name
    return BuildResult(summary, notes, bad)


def _fsync_tree(directory: str):
    """Flush the corpus files to disk before it is published under its name."""
    for name in os.listdir(directory):
        fsync_file(os.path.join(directory, name))
    fsync_dir(directory)


def budget_from_summary(path: str) -> int:
    """The token count of an earlier build (its summary.json, or the directory holding it)."""
    if os.path.isdir(path):
        path = os.path.join(path, SUMMARY)
    with open(path, encoding="utf-8") as f:
        try:
            tokens = json.load(f).get("tokens")
        except ValueError as e:  # not JSON (or not UTF-8): the message as json gives it
            raise ConfigError(str(e)) from e
    if not isinstance(tokens, int) or tokens <= 0:
        raise ConfigError(f"{path}: no positive 'tokens' count")
    return tokens
