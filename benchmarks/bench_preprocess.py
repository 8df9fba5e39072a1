#!/usr/bin/env python
"""Packing-stage benchmark: ours vs a Megatron-LM-style preprocess loop vs the bare tokenizer, same run.

- reference: megatron-core's IndexedDatasetBuilder fed one document at a time after one tokenizer call per
  document, in a Pool of --workers processes (what Megatron-LM's tools/preprocess_data.py does);
- ours: tools/preprocess_data.py with the same tokenizer and --workers;
- bare encoders: the sentencepiece library's batch encode, and our native encoder's, on the same texts already in
  memory, one thread (tokens/s per core) and --workers threads (the ceiling for packing: reading, parsing and
  writing cost nothing).

Then the peak memory of ours on a ~1 GB JSONL. Prints tokens/s and the ratios ours/reference, ours/bare.

With --fast-path (or --fast-path-only), Megatron-LM's fast path (its tools/preprocess_data_fast.py) against ours on
the same corpus with each Hugging Face tokenizer.json GigaToken loads: the tokenizer wrapped as
`gigatoken.Tokenizer(hf).as_hf()`, whole files encoded by `encode_files(JsonlFileSource(...), parallel=...)` (an
awkward array of documents), written by the installed megatron-core IndexedDatasetBuilder (0.16.1 has no
`add_documents`, so its steps are done here on the builder's own file and lists: flatten, EOD inserted after every
document, one write). That tool imports megatron.training, which is not pip-installable, hence this copy of its
steps. Skipped with a reason without gigatoken/awkward/transformers; a tokenizer GigaToken refuses is reported.
    python benchmarks/bench_preprocess.py [--size-mb 256] [--rss-size-mb 1024] [--workers 2] [--fast-path[-only]]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def run_cpu(cmd) -> dict:
    """run_measured plus the CPU seconds (user + system) of the command's whole process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = run_measured(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return run


# Megatron-LM's tools/preprocess_data_fast.py, its steps with the installed packages (see the module docstring).
FAST_PATH = """
import sys, numpy, awkward, gigatoken, transformers
from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
tokenizer_json, corpus, prefix, parallel, eod, vocab_size = sys.argv[1:]
hf = gigatoken.Tokenizer(transformers.PreTrainedTokenizerFast(tokenizer_file=tokenizer_json)).as_hf()
docs = hf.tokenizer.encode_files(gigatoken.JsonlFileSource([corpus], field='text'), parallel=parallel == '1')
builder = IndexedDatasetBuilder(prefix + '.bin', dtype=DType.optimal_dtype(int(vocab_size)))
for start in range(0, len(docs), 1_000_000):
    chunk = docs[start : start + 1_000_000]
    lengths = numpy.asarray(awkward.num(chunk, axis=1))
    flat = numpy.asarray(awkward.flatten(chunk), dtype=builder.dtype)
    if int(eod) >= 0:
        flat = numpy.insert(flat, numpy.cumsum(lengths), int(eod)).astype(builder.dtype, copy=False)
        lengths = lengths + 1
    builder.data_file.write(flat.tobytes(order='C'))
    first = len(builder.sequence_lengths)
    builder.sequence_lengths.extend(lengths.tolist())
    builder.document_indices.extend(range(first + 1, first + len(lengths) + 1))
builder.finalize(prefix + '.idx')
"""


def fast_path_families(work: str):
    """[(label, directory with tokenizer.json)] for the fast-path comparison, and a list of skip lines."""
    from tests.tokenizers.test_bytelevel import gpt2_style_tokenizer_json, llama3_style_tokenizer_json

    unique = list(dict.fromkeys(r["text"] for r in assets.default_corpus()))
    out, skipped = [], []
    for name, spec in (
        ("Llama-3-style tokenizer.json (trained here)", llama3_style_tokenizer_json(unique, ignore_merges=True)),
        ("GPT-2-style tokenizer.json (trained here, 256 bytes)", gpt2_style_tokenizer_json(unique)),
    ):
        spec.pop("post_processor", None)  # bare ids, as GigaToken's encode gives them
        directory = os.path.join(work, name.split("-style")[0].replace("-", "").lower() + "_tok")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "tokenizer.json"), "w") as f:
            json.dump(spec, f)
        out.append((name, directory))
    try:
        out.append(("SmolLM2-135M tokenizer.json", assets.smollm2_tokenizer_dir()))
    except (FileNotFoundError, ImportError) as e:
        skipped.append(f"SmolLM2-135M tokenizer.json: skipped ({e})")
    return out, skipped


def fast_path_section(corpus: str, work: str, repeat: int):
    """Megatron-LM's fast path vs ours, CPU seconds, wall and peak RSS; outputs compared token for token."""
    try:
        import awkward  # noqa: F401
        import gigatoken  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(
            f"\nMegatron-LM fast path: skipped ({e.name} is not installed; pip install gigatoken awkward transformers)"
        )
        return
    from importlib.metadata import version

    families, skipped = fast_path_families(work)

    print(f"\nMegatron-LM fast path: gigatoken {version('gigatoken')}, megatron-core {version('megatron-core')}")
    for line in skipped:
        print(line)
    for label, directory in families:
        fast_path_family(label, directory, corpus, work, repeat)


def fast_path_family(label: str, directory: str, corpus: str, work: str, repeat: int):
    """One tokenizer: ours and the fast path interleaved, `repeat` passes; prints the table and the check."""
    import gigatoken

    from megatron_ipt.formats.indexed import check_dataset
    from megatron_ipt.tokenizers import build_tokenizer

    json_path = os.path.join(directory, "tokenizer.json")
    try:
        gigatoken.Tokenizer(json_path)
    except Exception as e:  # noqa: BLE001  (GigaToken's refusal, reported as it words it)
        print(f"{label}: GigaToken refuses it: {type(e).__name__}: {str(e).splitlines()[0]}")
        return
    ours_tok = build_tokenizer("HuggingFaceTokenizer", directory, include_special_tokens=False)
    eod = -1 if ours_tok.eod is None else ours_tok.eod
    flags = ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", directory]
    flags += ["--tokenizer-hf-no-include-special-tokens"] + (["--append-eod"] if eod >= 0 else [])

    def ours(workers):
        prefix = os.path.join(work, f"ours_w{workers}")
        cmd = [sys.executable, "tools/preprocess_data.py", "--input", corpus, "--output-prefix", prefix]
        return run_cpu(cmd + ["--workers", str(workers), *flags]), prefix + "_text_document"

    empty = os.path.join(work, "empty.jsonl")
    open(empty, "w").close()

    def fast(parallel, source=corpus):
        prefix = os.path.join(work, f"fast_p{parallel}{'_empty' if source == empty else ''}_text_document")
        cmd = [sys.executable, "-c", FAST_PATH, json_path, source, prefix, str(parallel), str(eod)]
        return run_cpu(cmd + [str(ours_tok.vocab_size)]), prefix

    contenders = {
        "ours, --workers 1": lambda: ours(1),
        "fast path, parallel=False": lambda: fast(0),
        "ours, --workers 2": lambda: ours(2),
        "fast path, parallel=True": lambda: fast(1),
        "fast path start-up (empty input)": lambda: fast(0, empty),
    }
    best, prefixes = {}, {}
    for _ in range(repeat):  # interleaved; best CPU seconds and best wall kept separately, largest peak RSS
        for name, go in contenders.items():
            run, prefixes[name] = go()
            b = best.setdefault(name, {"cpu": run["cpu"], "seconds": run["seconds"], "rss": run["peak_tree"]})
            b["cpu"], b["seconds"] = min(b["cpu"], run["cpu"]), min(b["seconds"], run["seconds"])
            b["rss"] = max(b["rss"], run["peak_tree"])
    startup = prefixes.pop("fast path start-up (empty input)")
    assert os.path.getsize(startup + ".bin") == 0
    print(f"{label}: EOD {None if eod < 0 else eod}, {compare_outputs(prefixes)}")
    tokens = check_dataset(prefixes["ours, --workers 1"])["tokens"]
    print(f"  {tokens:,} tokens written (EOD included); best of {repeat} interleaved passes, peak RSS the largest")
    print(f"  {'':34}{'Mtok/s per CPU s':>18}{'CPU s':>8}{'wall s':>8}{'Mtok/s wall':>13}{'peak RSS':>11}")
    for name, b in best.items():
        rates = (
            ["-"] * 2 if name.endswith("(empty input)") else [f"{tokens / b[k] / 1e6:.2f}" for k in ("cpu", "seconds")]
        )
        print(
            f"  {name:34}{rates[0]:>18}{b['cpu']:>8.2f}{b['seconds']:>8.2f}{rates[1]:>13}{b['rss'] / 2**20:>8,.0f} MB"
        )
    for a, b in (
        ("ours, --workers 1", "fast path, parallel=False"),
        ("ours, --workers 2", "fast path, parallel=True"),
    ):
        print(
            f"  {a} / {b}: CPU {best[b]['cpu'] / best[a]['cpu']:.2f}x, "
            f"wall {best[b]['seconds'] / best[a]['seconds']:.2f}x (above 1: ours faster)"
        )


def compare_outputs(prefixes: dict) -> str:
    """Whether every contender wrote the same .bin/.idx bytes as ours --workers 1, else how the token ids differ."""
    ref = prefixes["ours, --workers 1"]
    notes = []
    for name, prefix in prefixes.items():
        same = {e: open(ref + e, "rb").read() == open(prefix + e, "rb").read() for e in (".bin", ".idx")}
        if all(same.values()):
            continue
        sizes = [os.path.getsize(p + ".bin") for p in (ref, prefix)]
        notes.append(
            f"{name}: .bin {'same' if same['.bin'] else 'differs'} ({sizes[0]:,} vs {sizes[1]:,} bytes), "
            f".idx {'same' if same['.idx'] else 'differs'}"
        )
    return "outputs byte-identical (.bin and .idx) to ours --workers 1" if not notes else "; ".join(notes)


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
    p.add_argument("--fast-path", action="store_true", help="also compare Megatron-LM's GigaToken fast path")
    p.add_argument("--fast-path-only", action="store_true", help="only that comparison (implies --fast-path)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved passes of the fast-path comparison")
    args = p.parse_args()
    model = assets.mistral_tokenizer_model()
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_preprocess_")
    os.makedirs(work, exist_ok=True)
    corpus = os.path.join(work, f"corpus_{args.size_mb}mb.jsonl")
    docs = write_corpus(corpus, args.size_mb)
    print(
        f"corpus: {corpus} ({args.size_mb} MiB, {docs:,} documents), Mistral SentencePiece, {args.workers} worker(s), "
        f"{os.cpu_count()} core(s), load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if args.fast_path or args.fast_path_only:
        fast_path_section(corpus, work, args.repeat)
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if args.fast_path_only:
            print(f"\nwork dir: {work} (delete when done)")
            return

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
