"""Task metrics, as percentages (0-100), matching the AdaptLLM domain harness's definitions.

Multiple choice: predictions and golds are option indices (for classification tasks such as FPB the options
are the class names, so an index is a class). F1 follows scikit-learn's `f1_score` over the labels present in
golds or predictions: micro-F1 pools true/false positives over classes (for single-label tasks it equals
accuracy, which is why the harness's micro-F1 tasks read like accuracy); weighted F1 averages per-class F1
weighted by each class's number of golds; `grouped_weighted_f1` is AdaptLLM's Headline metric (weighted F1
within each `class_id` group, then the plain mean over groups).

Generation: SQuAD normalization (lower case, punctuation and English articles removed, whitespace collapsed),
then exact match and token F1, each the best over the gold answers (shared with the synthesizer's judge:
megatron_ipt/metrics.py); `numeric_em` is ConvFinQA's (the first
number of the gold within 0.01 of any number in the prediction). Each is the mean of a per-item score (written
per item with --predictions-dir).

Continuous metrics, in nats (not percentages), for signal at small scale where accuracy barely moves:
`gold_loglik` and `gold_margin` (multiple choice, from the options' mean NLLs: `option_loglik_scores`),
`gold_nll` (generation) and held-out perplexity, computed by scoring.py from the model's NLLs.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence

# The answer metrics are shared with the synthesizer's judge (megatron_ipt/synthesis/judge.py), so they live below
# both stages; they stay reachable here under the names evaluation has always used.
from megatron_ipt.metrics import (  # noqa: F401 - re-exported
    exact_match,
    exact_match_item,
    mean,
    normalize_answer,
    token_f1,
    token_f1_item,
)

CHOICE_METRICS = ("accuracy", "micro_f1", "macro_f1", "weighted_f1", "grouped_weighted_f1")
GENERATION_METRICS = ("exact_match", "token_f1", "numeric_em")
# Reported for every task of their kind, in nats (the rest are percentages).
NATS_METRICS = ("gold_loglik", "gold_margin", "gold_nll", "nll_per_token")


def accuracy(golds: Sequence[int], preds: Sequence[int]) -> float:
    return 100.0 * sum(g == p for g, p in zip(golds, preds)) / len(golds)


def _per_class_counts(golds, preds):
    tp, fp, fn = Counter(), Counter(), Counter()
    for g, p in zip(golds, preds):
        if g == p:
            tp[g] += 1
        else:
            fp[p] += 1
            fn[g] += 1
    return tp, fp, fn


def _f1(tp: int, fp: int, fn: int) -> float:
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def micro_f1(golds, preds) -> float:
    tp, fp, fn = _per_class_counts(golds, preds)
    return 100.0 * _f1(sum(tp.values()), sum(fp.values()), sum(fn.values()))


def macro_f1(golds, preds) -> float:
    tp, fp, fn = _per_class_counts(golds, preds)
    labels = set(golds) | set(preds)
    return 100.0 * sum(_f1(tp[c], fp[c], fn[c]) for c in labels) / len(labels)


def weighted_f1(golds, preds) -> float:
    tp, fp, fn = _per_class_counts(golds, preds)
    support = Counter(golds)
    return 100.0 * sum(_f1(tp[c], fp[c], fn[c]) * support[c] for c in support) / len(golds)


def grouped_weighted_f1(golds, preds, groups) -> float:
    by_group = defaultdict(lambda: ([], []))
    for g, p, k in zip(golds, preds, groups):
        by_group[k][0].append(g)
        by_group[k][1].append(p)
    return sum(weighted_f1(g, p) for g, p in by_group.values()) / len(by_group)


_NUMBER = re.compile(r"[-+]?\.?\d+(?:,\d\d\d)*\.?\d*(?:[eE][-+]?\d+)?%*")


def numbers_in(text: str) -> List[float]:
    """Numbers in the first line of `text`; '12%' is 0.12 and '1,234' is 1234 (ConvFinQA's reading)."""
    values = []
    for token in _NUMBER.findall(text.split("\n")[0].strip()):
        percents = len(token) - len(token.rstrip("%"))
        try:
            values.append(float(token.rstrip("%").replace(",", "")) / 100**percents)
        except ValueError:
            continue
    return values


def numeric_em_item(golds: Sequence[str], pred: str) -> float:
    gold_numbers = numbers_in(golds[0])
    hit = gold_numbers and any(math.isclose(n, gold_numbers[0], abs_tol=1e-2) for n in numbers_in(pred))
    return 100.0 if hit else 0.0


def numeric_em(answers: Sequence[Sequence[str]], preds: Sequence[str]) -> float:
    return mean([numeric_em_item(golds, p) for golds, p in zip(answers, preds)])


def choice_scores(
    names: Sequence[str], golds: List[int], preds: List[int], groups: Optional[List[object]] = None
) -> Dict[str, float]:
    functions = {"accuracy": accuracy, "micro_f1": micro_f1, "macro_f1": macro_f1, "weighted_f1": weighted_f1}
    scores = {}
    for name in names:
        if name == "grouped_weighted_f1":
            scores[name] = grouped_weighted_f1(golds, preds, groups)
        else:
            scores[name] = functions[name](golds, preds)
    return scores


GENERATION_ITEM_METRICS = {"exact_match": exact_match_item, "token_f1": token_f1_item, "numeric_em": numeric_em_item}


def generation_item_scores(names: Sequence[str], golds: Sequence[str], pred: str) -> Dict[str, float]:
    """One generation item's score (0 or 100 for the exact matches, 0-100 for token F1) for each metric named."""
    return {name: GENERATION_ITEM_METRICS[name](golds, pred) for name in names}


def generation_scores(names: Sequence[str], answers: List[List[str]], preds: List[str]) -> Dict[str, float]:
    items = [generation_item_scores(names, golds, pred) for golds, pred in zip(answers, preds)]
    return {name: mean([item[name] for item in items]) for name in names}


def option_loglik_scores(option_nlls: Sequence[float], gold: int) -> Dict[str, float]:
    """Continuous scores of one multiple-choice item from its options' mean per-token NLLs (nats):
    `gold_loglik` = -NLL of the gold option; `gold_margin` = gold_loglik minus the best wrong option's (positive:
    the gold option is preferred). They move before accuracy does, which is what small-scale ablations need."""
    gold_loglik = -option_nlls[gold]
    best_wrong = max(-nll for j, nll in enumerate(option_nlls) if j != gold)
    return {"gold_loglik": gold_loglik, "gold_margin": gold_loglik - best_wrong}
