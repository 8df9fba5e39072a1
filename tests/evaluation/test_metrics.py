"""Metric functions against values computed by hand (in the comments)."""

import pytest

from megatron_ipt.evaluation import metrics

GOLDS = [0, 0, 1, 1, 2, 2, 2]
PREDS = [0, 1, 1, 1, 2, 0, 1]
# class 0: tp 1, fp 1 (item 5), fn 1 (item 1) -> F1 2/4 = 0.5
# class 1: tp 2, fp 2 (items 1, 6), fn 0 -> F1 4/6
# class 2: tp 1, fp 0, fn 2 (items 5, 6) -> F1 2/4 = 0.5


def test_accuracy_and_f1_variants():
    assert metrics.accuracy(GOLDS, PREDS) == pytest.approx(100 * 4 / 7)
    # micro: tp 4, fp 3, fn 3 -> 8/14, which is accuracy for single-label tasks
    assert metrics.micro_f1(GOLDS, PREDS) == pytest.approx(100 * 8 / 14)
    assert metrics.macro_f1(GOLDS, PREDS) == pytest.approx(100 * (0.5 + 4 / 6 + 0.5) / 3)
    # weighted by gold support 2, 2, 3
    assert metrics.weighted_f1(GOLDS, PREDS) == pytest.approx(100 * (0.5 * 2 + 4 / 6 * 2 + 0.5 * 3) / 7)


def test_a_predicted_class_without_golds_counts_for_macro_not_weighted():
    # class 0: tp 1, fn 1 -> F1 2/3; class 3: fp 1, no support -> F1 0
    assert metrics.weighted_f1([0, 0], [0, 3]) == pytest.approx(100 * 2 / 3)
    assert metrics.macro_f1([0, 0], [0, 3]) == pytest.approx(100 * (2 / 3 + 0) / 2)


def test_grouped_weighted_f1_is_the_mean_over_groups():
    # group a: perfect (100); group b: class 0 F1 2/3 with support 2, class 1 support 0 -> 66.67
    golds, preds, groups = [0, 1, 0, 0], [0, 1, 0, 1], ["a", "a", "b", "b"]
    assert metrics.grouped_weighted_f1(golds, preds, groups) == pytest.approx((100 + 200 / 3) / 2)


def test_exact_match_and_token_f1_use_squad_normalization_and_the_best_gold():
    assert metrics.normalize_answer("The Cat,  sat!") == "cat sat"
    assert metrics.exact_match([["The cat sat."]], ["cat sat"]) == 100.0
    assert metrics.exact_match([["dog"], ["x", "cat sat"]], ["cat", "Cat sat"]) == 50.0
    # gold "quick brown fox" (3 tokens), prediction "quick red fox jumps" (4): 2 shared -> P 1/2, R 2/3
    f1 = 2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3)
    assert metrics.token_f1([["the quick brown fox"]], ["a quick red fox jumps"]) == pytest.approx(100 * f1)
    assert metrics.token_f1([["nothing alike", "quick red fox jumps"]], ["quick red fox jumps"]) == 100.0
    assert metrics.token_f1([["abc"]], [""]) == 0.0


def test_numeric_em_reads_percent_and_thousands_and_uses_the_first_gold_number():
    assert metrics.numbers_in("up 12.5% from 1,234 last year\nignored 7") == pytest.approx([0.125, 1234.0])
    answers = [["12.5%"], ["1,234"], ["3"], ["no number"]]
    preds = ["The answer is 0.125", "1234.001", "2.98", "5"]
    assert metrics.numeric_em(answers, preds) == 50.0  # hits: 0.125 == 12.5%, |1234.001 - 1234| <= 0.01


def test_choice_scores_picks_the_named_metrics():
    scores = metrics.choice_scores(["accuracy", "weighted_f1"], GOLDS, PREDS)
    assert list(scores) == ["accuracy", "weighted_f1"]
