"""Mixing recipes (Cheng et al. 2024, arXiv 2406.14491, and the released models' cards): which documents each
source contributes and how many tokens of each.

Sources: ``augmented`` (rendered collections), ``raw`` (raw texts, and entries left without a valid pair),
``tuning`` (the synthesizer's tuning data, rendered like one-entry collections) and ``general_instruction``
(``"{question} {response}"``).

- ``general`` (pre-training from scratch): ``convert_fraction`` of all texts (paper: 1/5; synthesize them with
  ``--rounds 2``) come from whole collections picked at random and are rendered; the other collections'
  texts and every ``--raw-input`` text stay raw. Tuning data, if given, is added ``tuning_upsample`` times over
  (each copy rendered with fresh template choices).
- ``domain`` (continual pre-training): every collection rendered (paper: ``--rounds 3``), plus general
  instructions with ``instruction_ratio`` tokens per token of domain text (paper: 1:1).
- ``vanilla``: every text raw. ``mix``: every text raw, plus the tuning data (``tuning_upsample``) and/or
  general instructions (``instruction_ratio`` x raw tokens); no synthesized pairs.

Ratios are by tokens of the real tokenizer. Each source gets a token target; with ``token_budget`` all targets
are scaled by one factor so the total equals the budget (baselines use the budget of the run they compare
to). A target is met with whole documents: whole passes over the source, then a seeded random subset whose
size is closest to the remainder, so each source is off by at most half a document.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from megatron_ipt.errors import ConfigError
from megatron_ipt.formats.records import Collection, Entry

from .render import SEED_OFFSET, render_collection

RECIPES = ("general", "domain", "vanilla", "mix")
SOURCES = ("augmented", "raw", "tuning", "general_instruction")
TOKENIZE_BATCH = 1024


@dataclass
class RecipeConfig:
    recipe: str
    convert_fraction: float = 0.2
    tuning_upsample: float = 1.0
    instruction_ratio: float = 1.0
    token_budget: Optional[int] = None
    seed: int = SEED_OFFSET

    def check(self, has_raw: bool, has_tuning: bool, has_instructions: bool):
        """Refuse inputs a recipe would not use, so nothing a user gave is silently left out."""
        if self.recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}")
        if not 0 <= self.convert_fraction <= 1:
            raise ConfigError(f"--convert-fraction {self.convert_fraction} must be in [0, 1]")
        if self.tuning_upsample <= 0 or self.instruction_ratio < 0:
            raise ConfigError("--tuning-upsample must be > 0 and --instruction-ratio >= 0")
        if self.token_budget is not None and self.token_budget <= 0:
            raise ConfigError(f"--token-budget {self.token_budget} must be positive")
        unused = {
            "general": [("--general-instructions", has_instructions)],
            "domain": [("--raw-input", has_raw), ("--tuning-data", has_tuning)],
            "vanilla": [("--tuning-data", has_tuning), ("--general-instructions", has_instructions)],
            "mix": [],
        }[self.recipe]
        for flag, given in unused:
            if given:
                raise ConfigError(f"recipe {self.recipe!r} does not use {flag} (see --help for what each recipe mixes)")
        if self.recipe == "mix" and not (has_tuning or has_instructions):
            raise ConfigError(
                "recipe 'mix' adds instruction data to raw text: give --tuning-data and/or --general-instructions"
            )
        if self.recipe == "domain" and not has_instructions and self.instruction_ratio > 0:
            raise ConfigError(
                "recipe 'domain' mixes general instructions 1:1 by tokens: give --general-instructions "
                "(or --instruction-ratio 0 for augmented domain text only)"
            )


@dataclass
class Pool:
    """One source: its documents (each once) and the tokens the mixture wants from it."""

    texts: List[str] = field(default_factory=list)
    tokens: np.ndarray = None
    target: float = 0.0

    @property
    def total(self) -> int:
        return int(self.tokens.sum()) if self.tokens is not None else 0


@dataclass
class Inputs:
    """What the recipe mixes, each item with its "file:line" (after decontamination)."""

    collections: List[Tuple[str, Collection]] = field(default_factory=list)
    raw_texts: List[Tuple[str, str]] = field(default_factory=list)
    tuning: List[Tuple[str, Entry]] = field(default_factory=list)
    instructions: List[Tuple[str, str]] = field(default_factory=list)


def count_tokens(tokenizer, texts: List[str]) -> np.ndarray:
    counts = [
        tokenizer.encode_batch_flat(texts[i : i + TOKENIZE_BATCH])[1] for i in range(0, len(texts), TOKENIZE_BATCH)
    ]
    return np.concatenate(counts).astype(np.int64) if counts else np.zeros(0, dtype=np.int64)


def pick_converted(collections: List[Tuple[str, Collection]], want_texts: int, seed: int) -> List[int]:
    """Indices of whole collections, in a seeded random order, until they hold ``want_texts`` texts."""
    order = list(range(len(collections)))
    random.Random(seed).shuffle(order)
    chosen, texts = [], 0
    for i in order:
        if texts >= want_texts:
            break
        chosen.append(i)
        texts += len(collections[i][1])
    return sorted(chosen)


def _render(collections, indices, seed, stats, pools):
    for i in indices:
        for source, text in render_collection(collections[i][1], seed + i, stats=stats):
            pools[source].texts.append(text)


def _render_tuning(rows, copies: int, seed: int, stats: Counter) -> List[str]:
    """Tuning rows as one-entry collections; copy r of row i uses seed + r * len(rows) + i (fresh templates)."""
    texts = []
    for r in range(copies):
        for i, (_, row) in enumerate(rows):
            entry = Entry(row.context, row.qa_list)
            texts.extend(text for _, text in render_collection([entry], seed + r * len(rows) + i, stats=stats))
    return texts


def build_pools(cfg: RecipeConfig, inputs: Inputs, tokenizer, stats: Counter) -> Dict[str, Pool]:
    """Render and collect each source's documents, count their tokens, and set each source's token target."""
    pools = {s: Pool() for s in SOURCES}
    cols = inputs.collections
    if cfg.recipe == "general":
        total_texts = sum(len(c) for _, c in cols) + len(inputs.raw_texts)
        converted = pick_converted(cols, round(cfg.convert_fraction * total_texts), cfg.seed)
        _render(cols, converted, cfg.seed, stats, pools)
        chosen = set(converted)
        stats["texts:total"] = total_texts
        stats["texts:converted"] = sum(len(cols[i][1]) for i in converted)
        pools["raw"].texts += [e.context for i, (_, c) in enumerate(cols) if i not in chosen for e in c]
    elif cfg.recipe == "domain":
        _render(cols, range(len(cols)), cfg.seed, stats, pools)
        stats["texts:total"] = stats["texts:converted"] = sum(len(c) for _, c in cols)
    else:  # vanilla, mix: no synthesized pairs
        pools["raw"].texts += [e.context for _, c in cols for e in c]
    pools["raw"].texts += [t for _, t in inputs.raw_texts]
    pools["raw"].texts = [t for t in pools["raw"].texts if t.strip()]
    copies = math.ceil(cfg.tuning_upsample)
    if inputs.tuning:  # seeds after the collections' so no tuning copy repeats a collection's choices
        tuning_stats = Counter()
        pools["tuning"].texts = _render_tuning(inputs.tuning, copies, cfg.seed + len(cols), tuning_stats)
        stats.update({f"tuning {k}": v for k, v in tuning_stats.items()})
    pools["general_instruction"].texts = [t for _, t in inputs.instructions]

    for pool in pools.values():
        pool.tokens = count_tokens(tokenizer, pool.texts)
    for source in ("augmented", "raw"):
        pools[source].target = float(pools[source].total)
    pools["tuning"].target = pools["tuning"].total * cfg.tuning_upsample / copies
    base = pools["augmented"].total + pools["raw"].total
    pools["general_instruction"].target = cfg.instruction_ratio * base if inputs.instructions else 0.0
    if cfg.token_budget:
        natural = sum(p.target for p in pools.values())
        if natural <= 0:
            raise ConfigError("--token-budget given, but the inputs hold no tokens to fill it with")
        for pool in pools.values():
            pool.target *= cfg.token_budget / natural
    return pools


def choose(tokens: np.ndarray, target: float, rng: np.random.Generator) -> np.ndarray:
    """Document indices (repeats allowed) whose tokens sum as close to ``target`` as whole documents allow:
    ``target // total`` full passes, then a random subset for the remainder."""
    total = int(tokens.sum())
    if total == 0 or target <= 0:
        return np.zeros(0, dtype=np.int64)
    full = int(target // total)
    rest = target - full * total
    order = rng.permutation(len(tokens))
    cumulative = np.concatenate([[0], np.cumsum(tokens[order])])  # tokens of the first k documents
    k = int(np.searchsorted(cumulative, rest))  # the fewest documents reaching the remainder
    if k > 0 and rest - cumulative[k - 1] <= cumulative[k] - rest:
        k -= 1
    return np.concatenate([np.tile(np.arange(len(tokens)), full), order[:k]]).astype(np.int64)


def mix(pools: Dict[str, Pool], seed: int) -> Tuple[List[Tuple[str, int]], Dict[str, dict]]:
    """The mixed corpus as shuffled ``(source, document index)`` and per-source figures."""
    rng = np.random.default_rng(seed)
    picked, figures = [], {}
    for source in SOURCES:
        pool = pools[source]
        idx = choose(pool.tokens, pool.target, rng)
        tokens = int(pool.tokens[idx].sum()) if len(idx) else 0
        figures[source] = {
            "documents": len(idx),
            "tokens": tokens,
            "pool_documents": len(pool.texts),
            "pool_tokens": pool.total,
            "target_tokens": pool.target,
        }
        picked += [(source, int(i)) for i in idx]
    order = rng.permutation(len(picked))
    total = sum(f["tokens"] for f in figures.values())
    for f in figures.values():
        f["share"] = f["tokens"] / total if total else 0.0
    return [picked[i] for i in order], figures
