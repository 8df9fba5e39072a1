"""The ablation statistics on constructed cases whose answer is known."""

import time

import numpy as np
import pytest

from megatron_ipt.ablation.stats import (
    BETTER,
    NO_DIFFERENCE,
    WORSE,
    Draws,
    Sample,
    difference,
    estimate,
    resample,
    verdict,
)


def _arm(rng, seeds=3, items=400, scale=1.0):
    """Per-item values as runs give them: an item effect shared by every run, plus a run's own noise."""
    item_effect = np.random.default_rng(1234).normal(0.0, 2.0, items)  # the same items for every arm
    return item_effect[None, :] + rng.normal(0.0, scale, (seeds, items))


def test_identical_arms_give_exactly_zero_and_no_difference():
    values = _arm(np.random.default_rng(0))
    draws = Draws(values.shape[1], values.shape[0], resamples=2000)
    for higher in (True, False):
        d = difference(resample(Sample(values), draws), resample(Sample(values.copy()), draws), higher)
        assert (d.mean, d.low, d.high) == (0.0, 0.0, 0.0)
        assert d.verdict == NO_DIFFERENCE


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_planted_difference_is_detected_with_its_sign(higher_is_better):
    rng = np.random.default_rng(1)
    base = _arm(rng)
    shifted = base + 0.5 + rng.normal(0.0, 0.3, base.shape)  # +0.5 nats on every item, plus noise
    draws = Draws(base.shape[1], base.shape[0], resamples=2000)
    d = difference(resample(Sample(shifted), draws), resample(Sample(base), draws), higher_is_better)
    assert d.low > 0.3 and d.high < 0.7 and d.low <= d.mean <= d.high
    assert d.verdict == (BETTER if higher_is_better else WORSE)
    reverse = difference(resample(Sample(base), draws), resample(Sample(shifted), draws), higher_is_better)
    assert reverse.high < 0 and reverse.verdict == (WORSE if higher_is_better else BETTER)


def test_pure_noise_with_few_items_is_no_difference():
    rng = np.random.default_rng(2)
    found = []
    for trial in range(20):  # two arms drawn from one distribution: at 95% about 1 in 20 may be flagged
        a, b = rng.normal(0, 1, (3, 30)), rng.normal(0, 1, (3, 30))
        draws = Draws(30, 3, resamples=1000, seed=trial)
        found.append(difference(resample(Sample(a), draws), resample(Sample(b), draws), True).verdict)
    assert found.count(NO_DIFFERENCE) >= 17


def test_interval_contains_point_estimate_and_per_seed_values_are_run_means():
    values = _arm(np.random.default_rng(3), seeds=3, items=200)
    e = estimate(resample(Sample(values), Draws(200, 3, resamples=2000)))
    assert e.low <= e.mean <= e.high
    assert np.allclose(e.per_seed, values.mean(axis=1))
    assert e.mean == pytest.approx(values.mean(axis=1).mean())


def test_deterministic_under_the_bootstrap_seed():
    rng = np.random.default_rng(4)
    a, b = _arm(rng), _arm(rng)
    draws = [Draws(400, 3, resamples=500, seed=s) for s in (7, 7, 8)]
    runs = [difference(resample(Sample(a), d), resample(Sample(b), d), True) for d in draws]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_weighted_statistic_is_the_ratio_of_sums():
    rng = np.random.default_rng(5)
    tokens = rng.integers(5, 200, (3, 50)).astype(float)
    nll_sum = tokens * rng.uniform(2.0, 4.0, tokens.shape)
    sample = Sample(nll_sum / tokens, tokens)
    assert np.allclose(sample.per_seed(), nll_sum.sum(axis=1) / tokens.sum(axis=1), rtol=1e-12)
    e = estimate(resample(sample, Draws(50, 3, resamples=500), np.exp))  # perplexity per run, then the mean
    assert e.mean == pytest.approx(np.exp(nll_sum.sum(axis=1) / tokens.sum(axis=1)).mean())


def test_single_seed_resamples_items_only():
    draws = Draws(100, 1, resamples=300)
    assert not draws.seeds_resampled and (draws.seed_counts() == 1).all()
    values = np.random.default_rng(6).normal(0, 1, (1, 100))
    e = estimate(resample(Sample(values), draws))
    assert e.low < e.mean < e.high  # the items alone still give an interval
    d = difference(resample(Sample(values + 1.0), draws), resample(Sample(values), draws), True)
    assert d.low == pytest.approx(1.0) and d.high == pytest.approx(1.0) and d.verdict == BETTER


def test_resamples_cover_items_and_seeds_uniformly():
    draws = Draws(7, 3, resamples=3000, seed=9)
    items = np.concatenate(list(draws.item_count_chunks()))
    assert items.shape == (3000, 7) and (items.sum(axis=1) == 7).all()
    assert np.allclose(items.mean(axis=0), 1.0, atol=0.1)
    seeds = draws.seed_counts()
    assert (seeds.sum(axis=1) == 3).all() and np.allclose(seeds.mean(axis=0), 1.0, atol=0.1)


def test_verdict_reads_only_the_interval():
    assert verdict(0.1, 0.3, True) == BETTER and verdict(0.1, 0.3, False) == WORSE
    assert verdict(-0.3, -0.1, True) == WORSE and verdict(-0.3, -0.1, False) == BETTER
    assert verdict(-0.1, 0.3, True) == NO_DIFFERENCE and verdict(0.0, 0.0, True) == NO_DIFFERENCE


def test_ten_thousand_resamples_over_a_realistic_ablation_take_seconds():
    rng = np.random.default_rng(10)
    samples = [Sample(_arm(rng, seeds=3, items=500)) for _ in range(3)]
    draws = Draws(500, 3, resamples=10_000)
    began = time.perf_counter()
    for _ in range(10):  # ten metrics, three arms, IPT against two baselines
        arms = [resample(s, draws) for s in samples]
        for arm in arms:
            estimate(arm)
        difference(arms[2], arms[0], True)
        difference(arms[2], arms[1], True)
    assert time.perf_counter() - began < 60  # about 3 s on an idle core; the machine's 2 cores are shared


def test_a_difference_needs_the_same_draws():
    values = np.zeros((3, 10))
    with pytest.raises(ValueError, match="same draws"):
        difference(resample(Sample(values), Draws(10, 3, seed=1)), resample(Sample(values), Draws(10, 3, seed=2)), True)
