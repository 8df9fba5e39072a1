"""Answer metrics shared by the stages that score generated answers (evaluation's generation tasks, the
synthesizer's judge), as percentages (0-100): SQuAD normalization (lower case, punctuation and English articles
removed, whitespace collapsed), then exact match and token F1, each the best over the gold answers and averaged
over items by `mean`.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(gold: str, pred: str) -> float:
    gold_tokens, pred_tokens = normalize_answer(gold).split(), normalize_answer(pred).split()
    same = sum((Counter(gold_tokens) & Counter(pred_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match_item(golds: Sequence[str], pred: str) -> float:
    return 100.0 * max(normalize_answer(a) == normalize_answer(pred) for a in golds)


def token_f1_item(golds: Sequence[str], pred: str) -> float:
    return 100.0 * max(_token_f1(a, pred) for a in golds)


def exact_match(answers: Sequence[Sequence[str]], preds: Sequence[str]) -> float:
    return mean([exact_match_item(golds, p) for golds, p in zip(answers, preds)])


def token_f1(answers: Sequence[Sequence[str]], preds: Sequence[str]) -> float:
    return mean([token_f1_item(golds, p) for golds, p in zip(answers, preds)])


def mean(values: Sequence[float]) -> float:
    """The plain mean: every task metric that is a mean over items is computed by this one function from the
    per-item values (--predictions-dir), so the mean of the written item values is the task's metric."""
    return sum(values) / len(values)
