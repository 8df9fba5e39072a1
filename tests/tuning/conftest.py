import json
import os

import numpy as np
import pytest

from megatron_ipt import assets
from megatron_ipt.synthesis.engines.rules import mine_pairs
from megatron_ipt.tokenizers import TokenizerSpec
from tests.conftest import write_jsonl


@pytest.fixture(scope="session")
def smol_dir():
    return assets.smollm2_hf_dir()


@pytest.fixture(scope="session")
def smol_flags(smol_dir):
    return ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", smol_dir]


@pytest.fixture(scope="session")
def smol_tokenizer(smol_dir):
    return TokenizerSpec("HuggingFaceTokenizer", smol_dir, include_special_tokens=False).build()


@pytest.fixture(scope="session")
def mistral_flags(mistral_model):
    return ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", mistral_model]


def rows_from(texts, tag=""):
    """Tuning rows from real text, pairs mined by the rules engine (1 to 6 pairs each)."""
    rows = []
    for i, text in enumerate(texts):
        pairs = mine_pairs(text, max_pairs=1 + i % 6)
        if pairs:
            rows.append(
                {"context": text, "QA_list": [{"Q": q, "A": a} for q, a in pairs], "QA_type": tag, "rc_name": tag}
            )
    return rows


@pytest.fixture(scope="session")
def opticks_rows():
    return rows_from([p for p in assets.opticks_paragraphs() if len(p.split()) < 150][:60], "opticks")


@pytest.fixture(scope="session")
def pydoc_rows():
    return rows_from([t for t in assets.pydoc_topics() if len(t.split()) < 300][:20], "pydoc")


def dataset_folder(root, name, shards, manifests=None):
    """`root/name/shard/NNNNN.jsonl` per list of rows, and json/{split}.json manifests {split: [(shard, weight)]}."""
    folder = os.path.join(root, name)
    os.makedirs(os.path.join(folder, "shard"), exist_ok=True)
    for i, rows in enumerate(shards):
        write_jsonl(os.path.join(folder, "shard", f"{i:05d}.jsonl"), rows)
    if manifests is not None:
        os.makedirs(os.path.join(folder, "json"), exist_ok=True)
        for split, items in manifests.items():
            with open(os.path.join(folder, "json", f"{split}.json"), "w") as f:
                json.dump([{"source": s, "source_lang": "en", "weight": w} for s, w in items], f)
    return folder


def read_output(prefix):
    """(token arrays, mask arrays, summary) of a build, read as training reads them (megatron.core)."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    text, mask = IndexedDataset(f"{prefix}_text_document"), IndexedDataset(f"{prefix}_loss_mask_document")
    assert mask.index.dtype == np.uint8
    assert np.array_equal(text.sequence_lengths, mask.sequence_lengths)
    assert np.array_equal(text.document_indices, np.arange(len(text) + 1))  # one sequence per document
    with open(f"{prefix}.tuning.json") as f:
        summary = json.load(f)
    # copies: the arrays are views of memory maps that go away with the datasets
    return [np.array(text[i]) for i in range(len(text))], [np.array(mask[i]) for i in range(len(mask))], summary


def split_examples(tokens, mask):
    """A packed sequence as [(prompt ids, target ids)]: each example is a run of 0s then a run of 1s."""
    assert mask[0] == 0 and mask[-1] == 1 and set(np.unique(mask)) <= {0, 1}
    starts = [0] + [i for i in range(1, len(mask)) if mask[i] == 0 and mask[i - 1] == 1]
    out = []
    for a, b in zip(starts, starts[1:] + [len(mask)]):
        first_target = a + int(np.argmax(mask[a:b]))
        assert mask[a:first_target].sum() == 0 and mask[first_target:b].all()
        out.append((tokens[a:first_target], tokens[first_target:b]))
    return out
