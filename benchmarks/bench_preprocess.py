#!/usr/bin/env python
"""Packing-stage benchmark: ours vs a Megatron-LM-style preprocess loop vs the bare tokenizer, same run.

- reference: megatron-core's IndexedDatasetBuilder fed one document at a time after one tokenizer call per
  document, in a Pool of --workers processes (what Megatron-LM's tools/preprocess_data.py does);
- ours: tools/preprocess_data.py with the same tokenizer and --workers;
- bare encoders: the sentencepiece library's batch encode, and our native encoder's, on the same texts already in
  memory, one thread (tokens/s per core) and --workers threads (the ceiling for packing: reading, parsing and
  writing cost nothing).

Then the peak memory of ours on a ~1 GB JSONL. Prints tokens/s and the ratios ours/reference, ours/bare.
    python benchmarks/bench_preprocess.py [--size-mb 256] [--rss-size-mb 1024] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from megatron_ipt import assets  # noqa: E402


def write_corpus(path: str, size_mb: int) -> int:
    """Real text (pydoc topics + Opticks paragraphs) cycled to `size_mb`; returns the document count."""
    texts = [r["text"] for r in assets.default_corpus()]
    target, written, n = size_mb << 20, 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            line = json.dumps({"id": n, "text": texts[n % len(texts)]}, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            n += 1
    return n


def run_measured(cmd) -> dict:
    """Wall time and peak RSS (whole process tree, and largest single process) of a command."""
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    root = psutil.Process(proc.pid)
    peak_tree = peak_one = 0
    while proc.poll() is None:
        try:
            rss = [p.memory_info().rss for p in [root] + root.children(recursive=True)]
        except psutil.Error:
            rss = []
        if rss:
            peak_tree, peak_one = max(peak_tree, sum(rss)), max(peak_one, max(rss))
        time.sleep(0.05)
    output = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{output}")
    return {"seconds": time.time() - start, "peak_tree": peak_tree, "peak_one": peak_one, "output": output}


def bare_encode_seconds(path: str, model: str, threads: int, native: bool) -> tuple:
    """Seconds spent inside batch encode calls only (reading and JSON parsing are not timed), and tokens."""
    from megatron_ipt.tokenizers import build_tokenizer

    tokenizer = build_tokenizer("SentencePieceTokenizer", model, num_threads=threads, native=native)
    assert tokenizer.native == native
    seconds, tokens, batch = 0.0, 0, []

    def encode(texts):
        nonlocal seconds, tokens
        t0 = time.perf_counter()
        ids = tokenizer.encode_batch(texts)
        seconds += time.perf_counter() - t0
        tokens += sum(map(len, ids))

    with open(path, encoding="utf-8") as f:
        for line in f:
            batch.append(json.loads(line)["text"])
            if len(batch) == 4096:
                encode(batch)
                batch = []
    if batch:
        encode(batch)
    return seconds, tokens


def _read(work: str, name: str, ext: str) -> bytes:
    with open(os.path.join(work, f"{name}_text_document{ext}"), "rb") as f:
        return f.read()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=int, default=256, help="corpus size for the speed comparison")
    p.add_argument("--rss-size-mb", type=int, default=1024, help="corpus size for the peak-memory run (0 to skip)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--work-dir", default=None, help="where corpora and outputs go (default: a temp dir)")
    args = p.parse_args()
    model = assets.mistral_tokenizer_model()
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_preprocess_")
    os.makedirs(work, exist_ok=True)
    corpus = os.path.join(work, f"corpus_{args.size_mb}mb.jsonl")
    docs = write_corpus(corpus, args.size_mb)
    print(
        f"corpus: {corpus} ({args.size_mb} MiB, {docs:,} documents), Mistral SentencePiece, {args.workers} worker(s), "
        f"{os.cpu_count()} core(s)"
    )

    bare = {
        (native, threads): bare_encode_seconds(corpus, model, threads, native)
        for native in (False, True)
        for threads in sorted({1, args.workers})
    }
    tokens = bare[(False, 1)][1]
    assert all(t == tokens for _, t in bare.values()), "encoders disagree on the token count"
    ref = run_measured(
        [
            sys.executable,
            "-c",
            "import sys; from tests.packing.megatron_reference import megatron_style_preprocess as m; "
            "m(sys.argv[1], sys.argv[2], 'SentencePieceTokenizer', sys.argv[3], append_eod=True, workers=int(sys.argv[4]))",
            corpus,
            os.path.join(work, "ref"),
            model,
            str(args.workers),
        ]
    )
    runs = {}
    for name, extra in (("ours", []), ("ours_library", ["--no-native-tokenizer"])):
        runs[name] = run_measured(
            [
                sys.executable,
                "tools/preprocess_data.py",
                "--input",
                corpus,
                "--output-prefix",
                os.path.join(work, name),
                "--tokenizer-type",
                "SentencePieceTokenizer",
                "--tokenizer-model",
                model,
                "--append-eod",
                "--workers",
                str(args.workers),
                *extra,
            ]
        )
    same = all(_read(work, "ref", e) == _read(work, name, e) for name in runs for e in (".bin", ".idx"))
    rate = lambda s: tokens / s  # noqa: E731  (EOD tokens excluded everywhere, so rates compare like for like)
    print(f"\n{'':44}{'tokens/s':>14}{'seconds':>10}{'peak RSS (tree)':>18}")
    for (native, threads), (seconds, _) in sorted(bare.items()):
        label = f"bare {'native encoder' if native else 'sentencepiece library'}, {threads} thread(s)"
        print(f"{label:44}{rate(seconds):>14,.0f}{seconds:>10.1f}{'-':>18}")
    rows = (
        ("Megatron-style reference", ref),
        ("ours, sentencepiece library", runs["ours_library"]),
        ("ours (native encoder)", runs["ours"]),
    )
    for label, run in rows:
        print(f"{label:44}{rate(run['seconds']):>14,.0f}{run['seconds']:>10.1f}{run['peak_tree'] / 2**20:>15,.0f} MB")
    print(f"\nnative encoder / library, per core       {bare[(False, 1)][0] / bare[(True, 1)][0]:.2f}x")
    print(f"ours / reference (end to end)            {ref['seconds'] / runs['ours']['seconds']:.2f}x  (goal >= 5)")
    print(f"ours with the library / reference        {ref['seconds'] / runs['ours_library']['seconds']:.2f}x")
    print(
        f"ours with the library / bare library     {bare[(False, args.workers)][0] / runs['ours_library']['seconds']:.2f}  "
        f"(goal >= 0.90: packing costs almost nothing next to tokenizing)"
    )
    print(f"outputs byte-identical to the reference: {same}")

    if args.rss_size_mb:
        big = os.path.join(work, f"corpus_{args.rss_size_mb}mb.jsonl")
        if not os.path.exists(big):
            write_corpus(big, args.rss_size_mb)
        run = run_measured(
            [
                sys.executable,
                "tools/preprocess_data.py",
                "--input",
                big,
                "--output-prefix",
                os.path.join(work, "big"),
                "--tokenizer-type",
                "SentencePieceTokenizer",
                "--tokenizer-model",
                model,
                "--append-eod",
                "--workers",
                str(args.workers),
            ]
        )
        print(
            f"\npeak RSS of ours on a {os.path.getsize(big) / 2**30:.2f} GiB JSONL: {run['peak_tree'] / 2**20:,.0f} MB "
            f"for the whole process tree, {run['peak_one'] / 2**20:,.0f} MB for the largest process "
            f"({run['seconds']:.0f} s; goal < 1 GB)"
        )
    print(f"\nwork dir: {work} (delete when done)")


if __name__ == "__main__":
    main()
