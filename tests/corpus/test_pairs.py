import random

from megatron_ipt.corpus.pairs import validate_pair
from megatron_ipt.corpus.templates import load_templates
from tests.corpus.conftest import PAIRS

LIB = load_templates()
UNANS_OPT, UNANS_ANS = "No option fits", "The text is silent"


def check(qa, seed=7, index=3):
    return validate_pair(qa, seed, index, UNANS_OPT, UNANS_ANS, LIB)


def test_each_kind_is_typed_and_parsed():
    basic, _ = check(PAIRS["basic"])
    assert (basic.kind, basic.question, basic.answer) == (
        "basic",
        "What may make the Bow sensible?",
        "Cylinders of Ice.",
    )
    opt, _ = check(PAIRS["options"])
    assert opt.kind == "options" and opt.question == "How many Refractions does the Light pass through?"
    assert sorted(opt.options) == ["none", "three", "two"] and opt.options[opt.answer_index] == "two" == opt.answer
    cot, _ = check(PAIRS["cot"])
    assert cot.kind == "cot" and cot.question == "Why is the Bow scarce sensible?"
    assert cot.cot == "The Light is reflected three or more times. Each Reflexion weakens it"  # one final "." removed
    assert cot.answer == "it is too weak"
    both, _ = check(PAIRS["options_cot"])
    assert both.kind == "options_cot" and both.answer == "Cylinders of Ice" and len(both.options) == 2


def test_options_are_shuffled_with_random_seed_times_pair_index():
    qa = {"Q": "Pick.\nOptions:\n- " + "\n- ".join(f"o{i}" for i in range(8)), "A": "o0"}
    for seed, index in [(12345, 1), (12346, 2), (99, 5)]:
        expected = [f"o{i}" for i in range(8)]
        random.Random(seed * index).shuffle(expected)
        pair, _ = check(qa, seed, index)
        assert list(pair.options) == expected and pair.options[pair.answer_index] == "o0"
    positions = {check(qa, seed, 1)[0].answer_index for seed in range(100, 140)}
    assert len(positions) >= 5  # the gold option does not stay first


def test_unanswerable_answers_map_to_the_collection_phrasing():
    pair, _ = check({"Q": "Who wrote it?", "A": "Unanswerable."})
    assert pair.answer == UNANS_ANS
    # the answer is an unanswerable phrase that is not listed: the phrase is added as the last option
    pair, _ = check({"Q": "Which colour?\nOptions:\n- red\n- blue", "A": "None of the above"})
    assert pair.options[-1] == UNANS_OPT == pair.answer and pair.answer_index == 2
    # an unanswerable option is rewritten to the collection's phrasing, kept last, and can be the answer
    pair, _ = check(
        {"Q": "Which colour?\nOptions:\n- Not enough information\n- red\n- blue", "A": "Not enough information"}
    )
    assert pair.options[-1] == UNANS_OPT == pair.answer and sorted(pair.options[:2]) == ["blue", "red"]
    pair, _ = check({"Q": "Which colour?\nOptions:\n- cannot be determined\n- red\n- blue", "A": "red"})
    assert pair.options[-1] == UNANS_OPT and pair.answer == "red"


def test_bad_pairs_are_dropped_with_a_reason():
    cases = {
        "empty": {"Q": "  ", "A": "x"},
        "cot": {"Q": "Why?\nLet's think step by step. Really?", "A": "r\nTherefore, the answer is x"},
    }
    cases_more = [
        ({"Q": "Why?", "A": "r\nTherefore, the answer is x"}, "cot"),  # answer in CoT form, question not
        ({"Q": "Why?\nLet's think step by step.", "A": "no marker"}, "cot"),
        (
            {"Q": "Why?\nLet's think step by step.", "A": "a\nTherefore, the answer is b\nTherefore, the answer is c"},
            "cot",
        ),
        ({"Q": "Why?\nLet's think step by step.", "A": ".\nTherefore, the answer is b"}, "cot"),  # empty reasoning
        ({"Q": "Pick\nOptions:\n- a", "A": "a"}, "options"),  # one option
        ({"Q": "Pick\nOptions:\n- a\n- a", "A": "a"}, "options"),  # duplicate
        ({"Q": "Pick\nOptions:\n- a\n- \n- b", "A": "a"}, "options"),  # empty option
        ({"Q": "\nOptions:\n- a\n- b", "A": "a"}, "options"),  # no stem
        ({"Q": "Pick\nOptions:\n- a\nOptions:\n- b", "A": "a"}, "options"),
        ({"Q": "Pick\nOptions:\n- a\n- b", "A": "c"}, "answer_not_in_options"),
        ({"Q": "Pick\nOptions:\n- " + "\n- ".join(map(str, range(26))), "A": "0"}, "too_many_options"),
    ]
    for reason, qa in cases.items():
        assert check(qa) == (None, reason)
    for qa, reason in cases_more:
        assert check(qa) == (None, reason), qa
    assert check({"Q": "Pick\nOptions:\n- " + "\n- ".join(map(str, range(25))), "A": "0"})[0] is not None
