import copy
import math
import re
import string
from collections import Counter

import pytest

from megatron_ipt.corpus.pairs import validate_pair
from megatron_ipt.corpus.render import (
    INVERSION_RATE,
    MODE_WEIGHTS,
    MODE_WEIGHTS_FEW_PAIRS,
    Style,
    pair_fields,
    render_collection,
)
from megatron_ipt.corpus.templates import expand_marker, load_templates
from megatron_ipt.formats.records import Entry
from tests.corpus.conftest import OPTICKS, PAIRS, collection

LIB = load_templates()
ALL_KINDS = collection("basic", "options", "cot", "options_cot")
MODES = ["classic", "classic+inverted", "dialog", "dialog+inverted", "numbered", "inline", "next_turn"]


def layout_of(stats: Counter) -> str:
    mode = next(k.split(":")[1] for k in stats if k.startswith("layout:") and k != "layout:inverted")
    return mode + ("+inverted" if stats["layout:inverted"] else "")


def render_in(mode, col):
    """The first seed whose rendering of `col` uses `mode`, and its documents."""
    for seed in range(20000):
        stats = Counter()
        docs = render_collection(col, seed, stats=stats)
        if layout_of(stats) == mode:
            return seed, docs
    raise AssertionError(f"no seed gives {mode}")


def literal_chunks(template):
    return [text for text, _, _, _ in string.Formatter().parse(template) if text.strip()]


def uses_one_of(doc, templates):
    return any(all(chunk in doc for chunk in literal_chunks(t)) for t in templates)


@pytest.mark.parametrize("mode", MODES)
def test_each_layout_renders_every_pair_kind(mode):
    _, docs = render_in(mode, [ALL_KINDS])
    assert len(docs) == 1 and docs[0][0] == "augmented"
    doc = docs[0][1]
    assert doc.count(OPTICKS) == 1
    stems = [
        "What may make the Bow sensible?",
        "How many Refractions does the Light pass through?",
        "Why is the Bow scarce sensible?",
        "What explains the Parhelia?",
    ]
    for stem in stems:
        assert doc.count(stem) >= 1, stem
    # answers and reasoning are all there; the wire-format markers are not
    for part in ["Cylinders of Ice.", "it is too weak", "Each Reflexion weakens it", "It uses Cylinders of Ice"]:
        assert part in doc, part
    assert (
        "Let's think step by step." not in doc and "Therefore, the answer is" not in doc and "\nOptions:\n- " not in doc
    )
    text_at, first_question = doc.index(OPTICKS), min(doc.index(s) for s in stems)
    if mode.endswith("+inverted"):
        assert text_at > max(doc.index(s) for s in stems)
    elif mode != "numbered":  # numbered templates may list the questions before the text
        assert text_at < first_question
    if mode.startswith("dialog"):
        assert any(a.strip() in doc and b.strip() in doc for a, b in LIB.speakers)
    if mode == "numbered":
        assert uses_one_of(doc, LIB.numbered_templates)
        assert any(m[0].strip() in doc and m[3].strip() in doc for m in LIB.numbering_markers)
    if mode == "inline":  # every pair has a chain of thought only in some collections; here: plain templates
        assert uses_one_of(doc, [t.template for t in LIB.inline_plain])
        assert doc.index(stems[-1]) > max(doc.index(s) for s in stems[:-1])  # the last pair is the test
    if mode == "next_turn":
        assert uses_one_of(doc, LIB.next_turn + LIB.next_turn_inverted)


def test_inline_with_reasoning_everywhere_uses_explained_templates():
    _, docs = render_in("inline", [collection("cot", "options_cot")])
    doc = docs[0][1]
    assert uses_one_of(doc, [t.template for t in LIB.inline_explained])
    assert "Each Reflexion weakens it." in doc and "It uses Cylinders of Ice." in doc


def within(count, n, p, sigmas=4.5):
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_layout_weights_over_many_seeds():
    """Tolerance: 4.5 binomial standard deviations per mode (a false failure about once in 150,000 runs)."""
    n = 6000
    two = [collection("basic", "cot")]
    one = [collection("basic"), collection("options", inherit=True)]  # group minimum is 1 pair
    for col, weights in ((two, MODE_WEIGHTS), (one, MODE_WEIGHTS_FEW_PAIRS)):
        counts = Counter()
        for seed in range(n):
            stats = Counter()
            render_collection(col, 12345 + seed, stats=stats)
            counts.update(stats)
        total_weight = sum(w for _, w in weights)
        assert sum(counts[f"layout:{m}"] for m, _ in weights) == n
        for mode, weight in weights:
            assert within(counts[f"layout:{mode}"], n, weight / total_weight), (mode, counts)
        invertible = counts["layout:classic"] + counts["layout:dialog"]
        assert within(counts["layout:inverted"], invertible, INVERSION_RATE), counts
    assert set(k for k in counts if k.startswith("layout:")) <= {"layout:classic", "layout:dialog", "layout:inverted"}


def test_a_chain_is_one_document_and_entries_without_pairs_stay_raw():
    t1, t2, t3, t4 = (
        "First text about prisms and light.",
        "Second text, chained to the first.",
        "Third text starts a new chain.",
        "Fourth text has only broken pairs.",
    )
    chain = [
        collection("basic", text=t1),
        collection("options", text=t2, inherit=True),
        collection("cot", text=t3),
        Entry(t4, [{"Q": "Pick\nOptions:\n- a\n- b", "A": "c"}], inherit_from_prev=True),
        Entry("  ", [], inherit_from_prev=False),
    ]
    stats = Counter()
    docs = render_collection(chain, 5, stats=stats)
    assert [s for s, _ in docs] == ["augmented", "augmented", "raw"]
    assert t1 in docs[0][1] and t2 in docs[0][1] and t3 not in docs[0][1]
    assert t3 in docs[1][1] and docs[2][1] == t4
    assert stats["dropped:answer_not_in_options"] == 1 and stats["entries:empty"] == 1
    assert stats["entries"] == 5 and stats["entries:augmented"] == 3 and stats["entries:raw"] == 1


def test_deterministic_and_never_mutates_input(real_collections):
    before = copy.deepcopy(real_collections)
    first = [render_collection(c, 12345 + i) for i, c in enumerate(real_collections)]
    again = [render_collection(c, 12345 + i) for i, c in enumerate(real_collections)]
    assert first == again and real_collections == before
    other = [render_collection(c, 777 + i) for i, c in enumerate(real_collections)]
    changed = sum(a != b for a, b in zip(first, other))
    assert changed >= 0.9 * len(first)
    mutable = [ALL_KINDS]
    snapshot = copy.deepcopy(mutable)
    for seed in range(200):
        render_collection(mutable, seed)
    assert mutable == snapshot


def test_option_answer_is_the_marker_when_markers_name_items():
    pair, _ = validate_pair(PAIRS["options"], 3, 1, "None of these", "Unknown", LIB)
    patterns = {k: LIB.qa[k][0] for k in LIB.qa}
    lettered = Style(patterns, "Options:", expand_marker(" ({A}) "), (";", "."), "None of these", "Unknown", "\n\n")
    fields = pair_fields(pair, lettered)
    letter = "ABC"[pair.answer_index]
    assert fields["option_answer"] == f"({letter})"
    assert re.fullmatch(r"Options: \(A\) \w+; \(B\) \w+; \(C\) \w+\.", fields["options_"])
    dashed = Style(patterns, "", expand_marker("\n- "), ("", ""), "None of these", "Unknown", "\n\n")
    assert pair_fields(pair, dashed)["option_answer"] == "two"
