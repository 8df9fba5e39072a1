import re

import pytest

from megatron_ipt.corpus.templates import (
    MAX_ITEMS,
    PAIR_KINDS,
    _check,
    _qa_pattern,
    expand_marker,
    load_templates,
    markers_are_distinct,
)


def test_library_loads_with_dozens_of_templates_per_kind():
    sizes = load_templates().sizes()
    for kind in PAIR_KINDS:
        assert sizes[f"qa/{kind}"] >= 30, kind
    for name in (
        "read_start",
        "compre_start",
        "qa_start",
        "text_start",
        "option_markers",
        "speakers",
        "unanswerable_options",
        "unanswerable_answers",
        "numbering_markers",
    ):
        assert sizes[name] >= 30, name
    for name in (
        "numbered_templates",
        "next_turn",
        "inline_explained",
        "inline_plain",
        "dialog_headers",
        "option_starts",
    ):
        assert sizes[name] >= 12, name


def test_no_punctuation_glued_after_an_answer():
    """Answers usually end with their own punctuation: a template must not add '.' or ':' right after them."""
    lib = load_templates()
    for kind, patterns in lib.qa.items():
        for p in patterns:
            for part in (p.inputs, p.targets):
                assert not re.search(r"\{(option_answer|answer)\}[.,:;!?\"]", part), (kind, part)
    for t in lib.next_turn + lib.next_turn_inverted:
        assert not re.search(r"\{answer\}[.,:;!?\"]", t), t


def test_markers_expand_to_26_names():
    assert expand_marker(" ({A}) ")[:3] == (" (A) ", " (B) ", " (C) ")
    assert expand_marker("\n{I}. ")[3] == "\nIV. " and expand_marker("{i})")[8] == "ix)"
    assert expand_marker("\n- ") == ("\n- ",) * MAX_ITEMS and not markers_are_distinct(expand_marker("\n- "))
    assert all(markers_are_distinct(m) for m in load_templates().numbering_markers)
    with pytest.raises(ValueError, match="mixes"):
        expand_marker("{A}{1}")


def test_bad_templates_are_refused_at_load_time():
    with pytest.raises(ValueError, match="needs"):
        _check("Read {contxt}", "x", {"context"})
    with pytest.raises(ValueError, match="bad template"):
        _check("Read {context", "x", {"context"})
    with pytest.raises(ValueError, match="may use only"):
        _qa_pattern(["", "{question}", "\n", "", "{cot}", "\n\n"], "basic", "x")
    with pytest.raises(ValueError, match="does not show"):
        _qa_pattern(["", "{question}", "\n", "", "{answer}", "\n\n"], "cot", "x")
    with pytest.raises(ValueError, match="6 strings"):
        _qa_pattern(["{question}", "{answer}"], "basic", "x")
    assert (
        _qa_pattern(["Q: ", "{question}", "\n", "A: ", "{answer}", "\n\n"], "basic", "x").render(
            {"question": "q?", "answer": "a"}
        )
        == "Q: q?\nA: a"
    )
