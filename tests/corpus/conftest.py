import json

import pytest

from megatron_ipt.assets import opticks_paragraphs, pydoc_topics
from megatron_ipt.formats.records import Entry
from megatron_ipt.synthesis.engines import build_engine
from megatron_ipt.synthesis.rounds import synthesize_rounds
from tests.conftest import write_jsonl

# A pair of each kind in the synthesizer's wire format, about a real sentence of Newton's Opticks.
OPTICKS = (
    "The Light which passes through a drop of Rain after two Refractions, and three or more Reflexions, is scarce "
    "strong enough to cause a sensible Bow; but in those Cylinders of Ice by which Hugenius explains the "
    "Parhelia, it may perhaps be sensible."
)
PAIRS = {
    "basic": {"Q": "What may make the Bow sensible?", "A": "Cylinders of Ice."},
    "options": {"Q": "How many Refractions does the Light pass through?\nOptions:\n- two\n- three\n- none", "A": "two"},
    "cot": {
        "Q": "Why is the Bow scarce sensible?\nLet's think step by step.",
        "A": "The Light is reflected three or more times. Each Reflexion weakens it.\nTherefore, the answer is it is too weak",
    },
    "options_cot": {
        "Q": "What explains the Parhelia?\nOptions:\n- Cylinders of Ice\n- drops of Rain\nLet's think step by step.",
        "A": "The text names Hugenius's explanation. It uses Cylinders of Ice.\nTherefore, the answer is Cylinders of Ice",
    },
}


def collection(*kinds, text=OPTICKS, inherit=False):
    return Entry.from_json({"context": text, "QA_list": [dict(PAIRS[k]) for k in kinds], "inherit_from_prev": inherit})


@pytest.fixture(scope="session")
def real_collections():
    """Collections synthesized from real text (pydoc topics + Opticks) with the model-free rules engine, M=2."""
    texts = [t for t in pydoc_topics()[:40] + opticks_paragraphs()[:160] if len(t.split()) > 20]
    cols, failures = synthesize_rounds(texts, build_engine("rules").generate, 2)
    assert failures == 0 and sum(len(c) for c in cols) == len(texts)
    return cols


@pytest.fixture(scope="session")
def collections_file(real_collections, tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "collections.jsonl"
    path.write_text("".join(json.dumps(c.to_json()) + "\n" for c in real_collections))
    return str(path)


@pytest.fixture(scope="session")
def tuning_file(tmp_path_factory):
    """Tuning-data rows ({"context", "QA_list"}) mined from other real texts than the collections'."""
    from megatron_ipt.synthesis.engines.rules import mine_pairs

    rows = []
    for text in opticks_paragraphs()[200:260]:
        pairs = [{"Q": q, "A": a} for q, a in mine_pairs(text)]
        if pairs:
            rows.append({"context": text, "QA_list": pairs, "QA_type": "rules", "rc_name": "opticks"})
    return write_jsonl(tmp_path_factory.mktemp("tuning") / "tuning.jsonl", rows)
