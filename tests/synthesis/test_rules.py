import time
from collections import Counter

from megatron_ipt.assets import opticks_paragraphs
from megatron_ipt.formats.wire import COT_ANSWER_MARK, COT_QUESTION_MARK, cook_context, pair_type, parse_pred
from megatron_ipt.synthesis.engines import build_engine
from megatron_ipt.synthesis.rounds import synthesize_rounds


def test_rules_mines_parseable_pairs_deterministically():
    eng = build_engine("rules")
    text = (
        "The lens bends light because its surfaces are curved. Newton studied the colours of "
        "sunlight with a prism, and therefore he concluded that white light is a mixture of rays. "
        "Each ray is refracted by a different amount when it passes through the glass."
    )
    out = eng.generate([cook_context(text)])
    assert out == eng.generate([cook_context(text)])
    pairs = parse_pred(out[0])
    qs = [p["Q"] for p in pairs]
    assert qs[0].startswith("What is the main point")
    assert "Why the lens bends light?" in qs
    assert any(pair_type(p) == "options" for p in pairs)
    for p in pairs:
        if pair_type(p) == "options":
            assert p["A"] in p["Q"].split("\nOptions:\n- ")[1].split("\n- ")


def test_rules_over_real_text_multi_round():
    texts = [p for p in opticks_paragraphs() if len(p.split()) > 40][:200]
    eng = build_engine("rules")
    t = time.perf_counter()
    cols, failures = synthesize_rounds(texts, eng.generate, rounds=2)
    dt = time.perf_counter() - t
    entries = [e for c in cols for e in c]
    assert len(entries) == len(texts)
    per_text = sum(len(e.qa_list) for e in entries) / len(texts)
    assert per_text >= 2, per_text
    print(f"rules: {len(texts) / dt:.0f} texts/s, {per_text:.2f} pairs/text, failures={failures}")


def valid_cot(pair):
    """The released code's CoT validation (corpus/pairs.py): Q ends with the marker, A splits into exactly 2
    non-empty parts."""
    q, a = pair["Q"], pair["A"]
    parts = a.split(COT_ANSWER_MARK)
    return q.endswith(COT_QUESTION_MARK) and len(parts) == 2 and all(x.strip() for x in parts)


def test_rules_emits_cot_pairs_for_inference_connectives():
    text = (
        "Light of every colour is refracted by a different amount. The violet rays are bent the most, "
        "and therefore they appear at the top of the spectrum. The glass was cut with great care, so that the "
        "faces were flat."
    )
    pairs = parse_pred(build_engine("rules").generate([cook_context(text)])[0])
    cot = [p for p in pairs if pair_type(p) == "cot"]
    assert len(cot) == 1 and valid_cot(cot[0])
    assert cot[0]["A"].endswith(COT_ANSWER_MARK + "They appear at the top of the spectrum")
    assert "the violet rays are bent the most" in cot[0]["Q"]
    # ", so that" states a purpose: no inference pair from it
    assert not any("faces were flat" in p["A"] and pair_type(p) == "cot" for p in pairs)


def test_rules_pair_types_over_real_text():
    texts = opticks_paragraphs()[:300]
    outs = build_engine("rules").generate([cook_context(t) for t in texts])
    pairs = [p for o in outs for p in parse_pred(o)]
    kinds = Counter(pair_type(p) for p in pairs)
    assert kinds["cot"] > 20 and kinds["options"] > 100 and kinds["free-form"] > 300, kinds
    assert all(valid_cot(p) for p in pairs if pair_type(p) == "cot")
