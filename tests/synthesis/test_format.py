from megatron_ipt.formats.wire import cook_context, cook_example, cook_pairs, pair_type, parse_pred


def test_cook_context_keeps_leading_space_and_bos():
    assert cook_context("T") == "<s> <CON> T </CON>\n\n"
    assert cook_context("") == "<s>"


def test_cook_example_exact():
    pairs = [{"Q": "q1", "A": "a1"}, {"Q": "q2", "A": "a2"}]
    assert cook_pairs(pairs) == "<QUE> q1 <ANS> a1 </END>\n\n<QUE> q2 <ANS> a2 </END>"
    assert cook_example("T", pairs) == (
        "<s> <CON> T </CON>\n\n<QUE> q1 <ANS> a1 </END>\n\n<QUE> q2 <ANS> a2 </END></s>"
    )


def test_parse_roundtrip():
    pairs = [{"Q": "What?\nOptions:\n- x\n- y", "A": "x"}, {"Q": "Why?", "A": "Because."}]
    assert parse_pred(cook_pairs(pairs)) == pairs


def test_parse_drops_truncated_tail_and_bad_parts():
    pred = (
        "<QUE> ok <ANS> yes </END>\n\n"
        "no que <ANS> x </END>\n\n"  # missing <QUE>
        "<QUE> two <ANS> a <ANS> b </END>\n\n"  # two <ANS>
        "<QUE> empty <ANS>   </END>\n\n"  # empty answer
        "<QUE> OK <ANS> dup </END>\n\n"  # case-insensitive duplicate
        "<QUE> cut <ANS> trunc"
    )  # truncated tail
    assert parse_pred(pred) == [{"Q": "ok", "A": "yes"}]
    assert len(parse_pred(pred, dedup=False)) == 2
    assert parse_pred("") == [] and parse_pred(None) == []
    # a complete final pair is kept
    assert parse_pred("<QUE> a <ANS> b </END>") == [{"Q": "a", "A": "b"}]


def test_pair_type():
    assert pair_type({"Q": "q", "A": "a"}) == "free-form"
    assert pair_type({"Q": "q\nOptions:\n- a\n- b", "A": "a"}) == "options"
    assert pair_type({"Q": "q\nLet's think step by step.", "A": "r\nTherefore, the answer is a"}) == "cot"
