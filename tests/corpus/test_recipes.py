import numpy as np
import pytest

from megatron_ipt.corpus.recipes import RecipeConfig, choose, pick_converted


def test_choose_meets_a_token_target_with_whole_documents():
    rng = np.random.default_rng(0)
    tokens = rng.integers(50, 2000, size=300)
    total = int(tokens.sum())
    for target in (0, 0.3 * total, total, 2.5 * total, 7 * total + 123):
        idx = choose(tokens, target, np.random.default_rng(1))
        got = int(tokens[idx].sum())
        assert abs(got - target) <= tokens.max() / 2
        counts = np.bincount(idx, minlength=len(tokens))
        assert counts.max() - counts.min() <= 1  # full passes first, then each document at most once more
    assert list(choose(tokens, total, np.random.default_rng(2))) == list(range(300))  # the natural size: all, once
    assert len(choose(np.zeros(0, dtype=np.int64), 100, np.random.default_rng(0))) == 0


def test_pick_converted_takes_whole_collections_up_to_the_fraction():
    cols = [("f:1", [{}] * 2)] * 50 + [("f:2", [{}])] * 10  # 110 texts
    chosen = pick_converted(cols, 22, seed=3)
    texts = sum(len(cols[i][1]) for i in chosen)
    assert 22 <= texts <= 23 and chosen == sorted(set(chosen))
    assert pick_converted(cols, 22, seed=3) == chosen != pick_converted(cols, 22, seed=4)


@pytest.mark.parametrize(
    "kwargs, given, message",
    [
        (dict(recipe="other"), (0, 0, 0), "unknown recipe"),
        (dict(recipe="general", convert_fraction=1.5), (0, 0, 0), "convert-fraction"),
        (dict(recipe="general"), (0, 0, 1), "does not use --general-instructions"),
        (dict(recipe="domain"), (1, 0, 1), "does not use --raw-input"),
        (dict(recipe="mix"), (1, 0, 0), "give --tuning-data and/or --general-instructions"),
        (dict(recipe="vanilla", token_budget=-5), (0, 0, 0), "must be positive"),
    ],
)
def test_recipe_refuses_inputs_it_would_not_use(kwargs, given, message):
    with pytest.raises(ValueError, match=message):
        RecipeConfig(**kwargs).check(*map(bool, given))
    RecipeConfig("domain", instruction_ratio=0).check(False, False, False)  # augmented domain text only is fine
