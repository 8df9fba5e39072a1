import copy
import json

import pytest

from megatron_ipt.corpus.decontam import EvalNgrams, decontaminate, load_eval_sets, normalized_words
from megatron_ipt.corpus.recipes import Inputs
from megatron_ipt.formats.records import Collection, Entry
from megatron_ipt.io.inputs import InputError
from tests.corpus.conftest import OPTICKS

EVAL_ITEM = (
    "Which phenomenon did Hugenius explain with cylinders of ice, according to the passage about the "
    "rainbow and the refractions of light?"
)


def ngrams(*texts, n=13):
    g = EvalNgrams(n=n)
    g.add_texts(texts)
    return g


def test_overlap_hits_through_case_and_punctuation_and_misses_below_n():
    g = ngrams(EVAL_ITEM)
    words = normalized_words(EVAL_ITEM)
    hit = "Intro. " + " ".join(words[3:16]).upper().replace(" ", ",  ") + " -- and more text."  # exactly 13 words
    assert g.match(hit) == " ".join(words[3:16])
    assert g.match("Intro. " + " ".join(words[3:15]) + " unrelated words follow here") is None  # 12 words only
    assert g.match(OPTICKS) is None  # same topic, different wording
    assert g.match("") is None


def test_short_evaluation_texts_match_whole_and_tiny_ones_are_ignored():
    g = ngrams("What colour is the sky at noon on a clear day?", "Yes or no?")  # 11 words; 3 words
    assert g.texts == 1 and set(g.sets) == {11}
    assert g.match("Quiz: what colour is the sky at noon on a clear day? Blue.")
    assert g.match("What colour is the sky at noon on a cloudy day?") is None
    assert g.match("yes or no") is None


def test_eval_files_jsonl_with_keys_plain_text_and_bad_lines(tmp_path):
    jsonl = tmp_path / "eval.jsonl"
    jsonl.write_text(json.dumps({"question": EVAL_ITEM, "choices": ["a", "b"], "id": 7}) + "\n\n")
    text = tmp_path / "eval.txt"
    text.write_text("The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun.\n")
    g = load_eval_sets([str(jsonl), str(text)], keys=["question", "choices"])
    assert g.texts == 2 and len(g.files) == 2
    assert g.match("the quick brown fox jumps over the lazy dog while the cat sleeps in the")
    assert load_eval_sets([str(tmp_path)]).texts == 2  # a directory; every string of a record without keys
    with pytest.raises(InputError, match=r"eval.jsonl:1: evaluation set: missing key"):
        load_eval_sets([str(jsonl)], keys=["prompt"])
    (tmp_path / "bad.jsonl").write_text('{"question": "x"}\n{broken\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: evaluation set"):
        load_eval_sets([str(tmp_path / "bad.jsonl")])


def test_decontaminate_drops_pairs_and_texts_and_breaks_chains():
    clean_text = "Prisms separate white light into colours by refracting each colour by a different amount."
    leaked_q = {"Q": EVAL_ITEM, "A": "Parhelia"}
    good_q = {"Q": "What do prisms separate?", "A": "White light."}
    chain = Collection(
        [
            Entry(clean_text, [leaked_q, good_q], inherit_from_prev=False),
            Entry("Background. " + EVAL_ITEM, [good_q], inherit_from_prev=True),
            Entry(clean_text, [good_q], inherit_from_prev=True),
        ]
    )
    inputs = Inputs(
        collections=[("c.jsonl:1", chain)],
        raw_texts=[("r:1", EVAL_ITEM), ("r:2", clean_text)],
        tuning=[("t:1", Entry.from_json({"context": clean_text, "QA_list": [leaked_q]}))],
        instructions=[("i:1", EVAL_ITEM + " Parhelia"), ("i:2", "Say hi. Hi!")],
    )
    before = copy.deepcopy(inputs)
    g = ngrams(EVAL_ITEM)
    out, report = decontaminate(inputs, g)
    assert inputs == before
    entries = out.collections[0][1]
    assert [e.qa_list for e in entries] == [[good_q], [good_q]]
    assert entries[1].inherit_from_prev is False  # the entry it inherited from was dropped
    assert [t for _, t in out.raw_texts] == [clean_text]
    assert out.tuning[0][1].qa_list == [] and [t for _, t in out.instructions] == ["Say hi. Hi!"]
    assert report.counts == {
        "collections: pairs dropped": 1,
        "collections: texts dropped": 1,
        "raw texts: texts dropped": 1,
        "tuning data: pairs dropped": 1,
        "general instructions: instructions dropped": 1,
    }
    assert {
        "input": "collections",
        "where": "c.jsonl:1 entry 0 pair 0",
        "what": "pair",
        "dropped": True,
    }.items() <= report.flagged[0].items()
    kept, report = decontaminate(inputs, g, drop_texts=False)
    assert len(kept.collections[0][1]) == 3 and len(kept.raw_texts) == 2
    assert report.counts["collections: texts flagged (kept)"] == 1 and report.counts["collections: pairs dropped"] == 1


def test_batched_matching_ignores_windows_across_texts_and_equals_one_by_one():
    g = ngrams(EVAL_ITEM, "What colour is the sky at noon on a clear day?")
    words = normalized_words(EVAL_ITEM)
    texts = [
        " ".join(words[:6]),
        " ".join(words[6:13]),  # an n-gram split across two texts: no match
        "x " + " ".join(words[2:15]),
        OPTICKS,
        "",
        "so what colour is the sky at noon on a clear day then",
        " ".join(words[:13]),
    ]
    expected = [
        None,
        None,
        " ".join(words[2:15]),
        None,
        None,
        "what colour is the sky at noon on a clear day",
        " ".join(words[:13]),
    ]
    for batch in (1, 5, 1 << 20):
        assert g.match_many(texts, batch_words=batch) == expected
    assert [g.match(t) for t in texts] == expected
