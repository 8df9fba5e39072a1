"""Real, offline assets that installed packages ship (no model hub here; see README "Offline assets").

Each function returns a path or text, or raises a FileNotFoundError that says which package to install.
"""
from __future__ import annotations

import importlib.util
import os
import re
from typing import List


def _package_dir(package: str, install_hint: str) -> str:
    spec = importlib.util.find_spec(package)  # find, never import: some of these packages have heavy __init__s
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; install it with: pip install {install_hint}")
    return list(spec.submodule_search_locations)[0]


def _existing(path: str, package: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found; the installed {package!r} package does not ship it")
    return path


def mistral_tokenizer_model() -> str:
    """The Mistral-7B SentencePiece model (BPE, vocab 32000, bos=1, eos=2) shipped by mistral-common."""
    root = _package_dir("mistral_common", "mistral-common")
    return _existing(os.path.join(root, "data", "tokenizer.model.v1"), "mistral-common")


def opticks_text() -> str:
    """Newton's *Opticks* (Project Gutenberg), shipped inside the apache-tvm-ffi wheel."""
    root = _package_dir("tvm_ffi", "apache-tvm-ffi")
    path = _existing(os.path.join(root, "3rdparty", "libbacktrace", "Isaac.Newton-Opticks.txt"), "apache-tvm-ffi")
    with open(path, encoding="utf-8") as f:
        return f.read()


def opticks_paragraphs(min_chars: int = 200) -> List[str]:
    """Opticks split on blank lines into paragraphs with hard line wraps undone; short fragments dropped."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", opticks_text()):
        text = " ".join(line.strip() for line in block.splitlines()).strip()
        if len(text) >= min_chars:
            paragraphs.append(text)
    return paragraphs


def pydoc_topics() -> List[str]:
    """The 79 English reference documents of CPython's pydoc (pydoc_data.topics), in key order."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def default_corpus() -> List[dict]:
    """The quickstart's embedded corpus: every pydoc topic and Opticks paragraph as `{"id", "source", "text"}`."""
    records = [{"id": f"pydoc-{i}", "source": "pydoc", "text": t} for i, t in enumerate(pydoc_topics())]
    records += [{"id": f"opticks-{i}", "source": "opticks", "text": t} for i, t in enumerate(opticks_paragraphs())]
    return records


def _main(argv=None) -> int:
    """`python -m megatron_ipt.assets mistral-tokenizer` prints the model path;
    `python -m megatron_ipt.assets corpus OUT.jsonl` writes the default corpus (for shell scripts)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m megatron_ipt.assets", description=_main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("mistral-tokenizer")
    corpus = sub.add_parser("corpus")
    corpus.add_argument("output")
    args = parser.parse_args(argv)
    if args.command == "mistral-tokenizer":
        print(mistral_tokenizer_model())
    else:
        records = default_corpus()
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        tmp = args.output + ".inprogress"
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, args.output)
        print(f"wrote {len(records)} documents to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
