"""Megatron-LM's preprocess_data.py encode loop, restated on megatron-core's own IndexedDatasetBuilder.

Not used by the pipeline: it is the reference that parity tests compare our output with and that
benchmarks/bench_preprocess.py times ours against. It does what Megatron-LM does: a Pool of workers, each
parsing one JSON line and calling the tokenizer once per document (`imap(..., chunksize=32)`), and a single
writer calling `IndexedDatasetBuilder.add_document` per document, then `finalize`.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from typing import List, Optional

import numpy as np

_state: dict = {}


def _init(tokenizer_type: str, tokenizer_model: str, json_keys: List[str], append_eod: bool):
    from megatron_ipt.tokenizers import build_tokenizer

    # The library, as Megatron-LM uses it (never our native encoder): this is the reference.
    _state.update(
        tokenizer=build_tokenizer(tokenizer_type, tokenizer_model, native=False), keys=json_keys, append_eod=append_eod
    )


def _encode(line: bytes):
    tokenizer = _state["tokenizer"]
    data = json.loads(line)
    out = {}
    for key in _state["keys"]:
        text = data[key]
        sentences = text if isinstance(text, list) else [text]
        doc_ids, sentence_lens = [], []
        for sentence in sentences:
            ids = tokenizer.encode(sentence)
            if ids:
                doc_ids.extend(ids)
                sentence_lens.append(len(ids))
        if doc_ids and _state["append_eod"]:
            doc_ids.append(tokenizer.eod)
            sentence_lens[-1] += 1
        out[key] = (doc_ids, sentence_lens)
    return out, len(line)


def megatron_style_preprocess(
    input_path: str,
    output_prefix: str,
    tokenizer_type: str,
    tokenizer_model: str,
    json_keys: Optional[List[str]] = None,
    append_eod: bool = False,
    workers: int = 1,
) -> dict:
    """Write `{output_prefix}_{key}_document.{bin,idx}` the way Megatron-LM does. Returns {"documents", "tokens"}."""
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    from megatron_ipt.tokenizers import build_tokenizer

    json_keys = json_keys or ["text"]
    vocab_size = build_tokenizer(tokenizer_type, tokenizer_model, native=False).vocab_size
    dtype = DType.optimal_dtype(vocab_size)
    builders = {k: IndexedDatasetBuilder(f"{output_prefix}_{k}_document.bin", dtype=dtype) for k in json_keys}
    documents = tokens = 0
    initargs = (tokenizer_type, tokenizer_model, json_keys, append_eod)
    with open(input_path, "rb") as fin:
        if workers > 1:
            pool = mp.get_context("spawn").Pool(workers, initializer=_init, initargs=initargs)
            encoded = pool.imap(_encode, fin, 32)
        else:
            pool = None
            _init(*initargs)
            encoded = map(_encode, fin)
        for doc, _ in encoded:
            documents += 1
            for key, (ids, lens) in doc.items():
                builders[key].add_document(np.array(ids, dtype=np.int64), lens)
                tokens += len(ids)
        if pool is not None:
            pool.close()
            pool.join()
    for key, builder in builders.items():
        builder.finalize(f"{output_prefix}_{key}_document.idx")
    return {"documents": documents, "tokens": tokens}
