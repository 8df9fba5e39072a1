import time

from megatron_ipt.assets import opticks_paragraphs
from megatron_ipt.synthesis.engines import build_engine
from megatron_ipt.synthesis.format import cook_context, pair_type, parse_pred
from megatron_ipt.synthesis.rounds import synthesize_rounds


def test_rules_mines_parseable_pairs_deterministically():
    eng = build_engine("rules")
    text = ("The lens bends light because its surfaces are curved. Newton studied the colours of "
            "sunlight with a prism, and therefore he concluded that white light is a mixture of rays. "
            "Each ray is refracted by a different amount when it passes through the glass.")
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
    per_text = sum(len(e["QA_list"]) for e in entries) / len(texts)
    assert per_text >= 2, per_text
    print(f"rules: {len(texts) / dt:.0f} texts/s, {per_text:.2f} pairs/text, failures={failures}")
