"""Tally of hostile inputs (issue 25): how many give one clear `error:` line naming the file, no traceback.

    PYTHONPATH=. python tools/dev/hostile_inputs.py [--no-pretrain]

Three areas: a `.bin` whose size is not the one its `.idx` describes (pretrain, merge_datasets); a corrupt
SentencePiece model or a directory as --tokenizer-model (preprocess_data, build_corpus, pretrain); an input with no
documents (preprocess_data). Each case is run as the user would run the tool; "clear" means exit status != 0, exactly
one stderr/stdout line starting with `error: ` that names the path, and no `Traceback`.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from megatron_ipt import assets  # noqa: E402
from tests import launch  # noqa: E402


def _pretrain_flags(data_prefix: str, tokenizer_model: str) -> list:
    """Two steps of the tiny model on `data_prefix` with this tokenizer model."""
    return ["--model", "tiny", "--micro-batch-size", "2", "--global-batch-size", "2", "--lr", "1e-3"] + [
        "--train-iters",
        "2",
        "--data-path",
        data_prefix,
        "--split",
        "90,10,0",
        "--tokenizer-type",
        "SentencePieceTokenizer",
        "--tokenizer-model",
        tokenizer_model,
    ]


def fuzzed_models(model: str, out: str, count: int) -> list:
    """`count` damaged copies of a real SentencePiece model: bytes flipped, truncated, a chunk overwritten, the header
    scrambled (in turn), seeded."""
    data, rng, paths = open(model, "rb").read(), random.Random(0), []
    for i in range(count):
        b = bytearray(data)
        kind = i % 4
        if kind == 0:
            for _ in range(rng.randint(1, 50)):
                j = rng.randrange(len(b))
                b[j] ^= rng.randrange(1, 256)
        elif kind == 1:
            b = b[: rng.randrange(len(b))]
        elif kind == 2:
            j, n = rng.randrange(len(b)), rng.randint(1, 4096)
            b[j : j + n] = bytes(rng.randrange(256) for _ in range(min(n, len(b) - j)))
        else:
            for j in range(rng.randint(1, 16)):
                b[j] = rng.randrange(256)
        path = os.path.join(out, f"fuzz{i:02d}.model")
        with open(path, "wb") as f:
            f.write(bytes(b))
        paths.append(path)
    return paths


def clear(proc, path: str) -> bool:
    out = proc.stdout + proc.stderr
    lines = [line for line in out.splitlines() if line.startswith("error: ")]
    # under torchrun, its own ChildFailedError traceback is the only one allowed, its summary showing our line
    launcher_only = out.count("Traceback (most recent call last)") == 1 and "traceback : error: " in out
    return proc.returncode != 0 and len(lines) == 1 and path in lines[0] and ("Traceback" not in out or launcher_only)


def tool(script, *args, nproc=None):
    """Run tools/`script` (under torchrun with `nproc` processes: pretrain.py)."""
    argv = [*launch.launcher(nproc), os.path.join(REPO, "tools", script), *map(str, args)]
    return subprocess.run(argv, env=launch.environment(), capture_output=True, text=True, timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-pretrain", action="store_true", help="skip the (slow, torchrun) pretrain cases")
    parser.add_argument("--fuzzed", type=int, default=8, help="fuzzed models per tool (pretrain: 2)")
    args = parser.parse_args()
    model = assets.mistral_tokenizer_model()
    root = tempfile.mkdtemp(prefix="hostile-")
    tally = {}

    def record(area, name, proc, path):
        ok = clear(proc, path)
        tally.setdefault(area, [0, 0])
        tally[area][0] += ok
        tally[area][1] += 1
        first = next((line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error: ")), "")
        print(f"{'clear' if ok else 'NOT  '} {area:10} {name:28} rc={proc.returncode} {first[:110]}", flush=True)

    texts = assets.opticks_paragraphs()[:120]
    jsonl = os.path.join(root, "in.jsonl")
    with open(jsonl, "w") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    # a real dataset, and a .bin of another (larger) one
    good = os.path.join(root, "good", "x")
    os.makedirs(os.path.dirname(good))
    sp = ["--tokenizer-type", "SentencePieceTokenizer"]
    assert (
        tool(
            "preprocess_data.py",
            "--input",
            jsonl,
            "--output-prefix",
            good,
            *sp,
            "--tokenizer-model",
            model,
            "--append-eod",
        ).returncode
        == 0
    )
    good += "_text_document"
    bigger = os.path.join(root, "bigger.jsonl")
    with open(bigger, "w") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in texts * 2)
    other = os.path.join(root, "other", "y")
    os.makedirs(os.path.dirname(other))
    assert (
        tool(
            "preprocess_data.py",
            "--input",
            bigger,
            "--output-prefix",
            other,
            *sp,
            "--tokenizer-model",
            model,
            "--append-eod",
        ).returncode
        == 0
    )
    other += "_text_document"

    # 1. .bin sizes
    def pair(name, damage):
        prefix = os.path.join(root, "pairs", name, "d_text_document")
        os.makedirs(os.path.dirname(prefix))
        for ext in (".bin", ".idx"):
            shutil.copy(good + ext, prefix + ext)
        damage(prefix)
        return prefix

    cases = {
        "bin+2-bytes": lambda p: open(p + ".bin", "ab").write(b"\0\0"),
        "bin-of-a-bigger-dataset": lambda p: shutil.copy(other + ".bin", p + ".bin"),
        "bin-short-by-2": lambda p: os.truncate(p + ".bin", os.path.getsize(p + ".bin") - 2),
    }
    for name, damage in cases.items():
        prefix = pair(name, damage)
        record(
            "bin-size",
            "merge " + name,
            tool(
                "merge_datasets.py",
                "--input",
                os.path.dirname(prefix),
                "--output-prefix",
                os.path.join(root, "merged", name),
            ),
            prefix,
        )
        if not args.no_pretrain:
            flags = _pretrain_flags(prefix, model)
            record("bin-size", "pretrain " + name, tool("pretrain.py", *flags, nproc=1), prefix)

    # 2. tokenizer files
    fuzz_dir = os.path.join(root, "fuzz")
    os.makedirs(fuzz_dir)
    fuzzed = fuzzed_models(model, fuzz_dir, args.fuzzed)
    directory = os.path.join(root, "a-directory")
    os.makedirs(directory)
    shutil.copy(model, os.path.join(directory, "tokenizer.model"))
    bad = [*fuzzed, directory]
    collections = os.path.join(root, "collections.jsonl")
    with open(collections, "w") as f:
        f.writelines(
            json.dumps({"context": t, "QA_list": [{"Q": "What is it about?", "A": "Light."}]}) + "\n" for t in texts
        )
    for path in bad:
        name = os.path.basename(path)
        out = os.path.join(root, "tok", name)
        tok = [*sp, "--tokenizer-model", path]
        record(
            "tokenizer",
            "preprocess " + name,
            tool("preprocess_data.py", "--input", jsonl, "--output-prefix", out + "/p", *tok),
            path,
        )
        record(
            "tokenizer",
            "build_corpus " + name,
            tool(
                "build_corpus.py",
                "--recipe",
                "general",
                "--collections",
                collections,
                "--token-budget",
                "1000",
                "--output-dir",
                out + "/c",
                *tok,
            ),
            path,
        )
    if not args.no_pretrain:
        for path in [fuzzed[0], fuzzed[1], directory]:
            flags = _pretrain_flags(good, path)
            record("tokenizer", "pretrain " + os.path.basename(path), tool("pretrain.py", *flags, nproc=1), path)

    # 3. inputs with no documents
    for name, content in (("empty", ""), ("blank-lines", "\n\n\n"), ("whitespace-lines", "  \n\t\n \r\n")):
        path = os.path.join(root, name + ".jsonl")
        with open(path, "w") as f:
            f.write(content)
        for workers in (1, 2):
            record(
                "no-docs",
                f"preprocess {name} w{workers}",
                tool(
                    "preprocess_data.py",
                    "--input",
                    path,
                    "--output-prefix",
                    os.path.join(root, "e", name),
                    *sp,
                    "--tokenizer-model",
                    model,
                    "--workers",
                    workers,
                ),
                path,
            )

    print()
    for area, (ok, total) in tally.items():
        print(f"{area:10} {ok}/{total} clear")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
