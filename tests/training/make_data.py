"""Build a real-token Megatron dataset for tests (Mistral tokenizer over the offline assets' text)."""

import os
import sys

import numpy as np
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from megatron_ipt import assets
from megatron_ipt.tokenizers import build_tokenizer


def make(prefix: str, texts, tokenizer_model: str) -> str:
    tok = build_tokenizer("SentencePieceTokenizer", tokenizer_model)
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for ids in tok.encode_batch(list(texts)):
        builder.add_document(np.array(ids + [tok.eod], dtype=np.uint16), [len(ids) + 1])
    builder.finalize(prefix + ".idx")
    return prefix


if __name__ == "__main__":
    out = sys.argv[1]
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    make(out, assets.opticks_paragraphs()[:120], assets.mistral_tokenizer_model())
