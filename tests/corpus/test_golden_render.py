"""One real text rendered in every layout, compared byte for byte with tests/corpus/golden/<layout>.txt.

The text is a paragraph of Newton's Opticks from the embedded corpus (document opticks-81) with the pairs the
quickstart's rules engine writes for it: free-form, chain-of-thought and options. Each layout is rendered with the
first seed from 12345 (the seed of collection 0 with build_corpus's default --seed) that gives it. docs/corpus.md
shows the classic one. A change to the templates, the layout sampling or the renderer shows up here as a diff;
if it is intended, write the new rendering over the golden file and say why in the commit.
"""

from collections import Counter
from pathlib import Path

import pytest

from megatron_ipt.assets import opticks_paragraphs
from megatron_ipt.corpus.render import render_collection
from megatron_ipt.synthesis.engines import build_engine
from megatron_ipt.synthesis.rounds import synthesize_rounds

GOLDEN = Path(__file__).parent / "golden"
FIRST_SEED = 12345
# layout (file name) -> the first seed from FIRST_SEED that renders the collection in it
SEEDS = {
    "classic": 12346,
    "classic-inverted": 12351,
    "dialog": 12385,
    "dialog-inverted": 12745,
    "numbered": 12345,
    "inline": 12394,
    "next_turn": 12390,
}


@pytest.fixture(scope="module")
def opticks_collection():
    text = opticks_paragraphs()[81]
    assert text.startswith("And the same Proposition holds true of any Motion")
    collections, failures = synthesize_rounds([text], build_engine("rules").generate, rounds=1)
    assert failures == 0 and len(collections) == 1
    return collections[0]


def layout(collection, seed):
    stats = Counter()
    docs = render_collection(collection, seed, stats=stats)
    mode = next(key.split(":")[1] for key in stats if key.startswith("layout:") and key != "layout:inverted")
    return mode + ("-inverted" if stats["layout:inverted"] else ""), docs


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_rendering_matches_golden_file(opticks_collection, name):
    rendered, docs = layout(opticks_collection, SEEDS[name])
    assert rendered == name
    assert [source for source, _ in docs] == ["augmented"]
    assert docs[0][1] == (GOLDEN / f"{name}.txt").read_bytes().decode("utf-8")


def test_each_golden_seed_is_the_first_that_gives_its_layout(opticks_collection):
    first = {}
    for seed in range(FIRST_SEED, max(SEEDS.values()) + 1):
        first.setdefault(layout(opticks_collection, seed)[0], seed)
    assert first == SEEDS
