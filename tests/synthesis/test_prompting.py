import pytest

from megatron_ipt.formats.wire import QUE, cook_context, pair_type, parse_pred
from megatron_ipt.synthesis.prompting import DEMO_PAIRS, DEMO_TEXT, PromptStyle


def test_wire_is_the_prompt_unchanged():
    style = PromptStyle("wire")
    assert (
        style.render(cook_context("T")) == cook_context("T")
        and style.restore("<QUE> q <ANS> a </END>") == "<QUE> q <ANS> a </END>"
    )


def test_oneshot_demo_is_valid_wire_format_with_every_kind():
    style = PromptStyle("oneshot")
    text = style.render(cook_context("T"))
    assert text.startswith("<s> <CON> " + DEMO_TEXT + " </CON>\n\n<QUE> ")
    assert text.endswith(cook_context("T") + QUE)
    demo_out = text[len("<s> <CON> " + DEMO_TEXT + " </CON>\n\n") :].split("</s>")[0]
    assert parse_pred(demo_out) == DEMO_PAIRS
    assert {pair_type(p) for p in DEMO_PAIRS} == {"free-form", "options", "cot"}
    # the started <QUE> is given back to the parser; an empty generation stays a failure
    assert parse_pred(style.restore(" q? <ANS> a </END>")) == [{"Q": "q?", "A": "a"}]
    assert style.restore("") == "" and style.restore(None) is None


def test_chat_needs_a_chat_template():
    with pytest.raises(ValueError, match="chat template"):
        PromptStyle("chat", tokenizer=None)
    with pytest.raises(ValueError, match="unknown --prompt-style"):
        PromptStyle("fancy")
