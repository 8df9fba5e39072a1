"""tools/preprocess_data.py end to end on real text with the real Mistral SentencePiece model."""

import filecmp
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_ipt.packing.preprocess import PreprocessConfig, preprocess
from megatron_ipt.tokenizers import TokenizerSpec, build_tokenizer
from tests.conftest import REPO, write_jsonl
from tests.packing.megatron_reference import megatron_style_preprocess

TOOL = os.path.join(REPO, "tools", "preprocess_data.py")


def run_tool(*args):
    return subprocess.run([sys.executable, TOOL, *map(str, args)], capture_output=True, text=True, cwd=REPO)


def same_dataset(a, b):
    return all(filecmp.cmp(a + ext, b + ext, shallow=False) for ext in (".bin", ".idx"))


def documents(prefix):
    """Token lists per document, empty documents included."""
    ds = IndexedDataset(prefix)
    bounds = ds.document_indices
    out = [
        np.concatenate([ds[j] for j in range(bounds[i], bounds[i + 1])]).tolist() if bounds[i + 1] > bounds[i] else []
        for i in range(len(bounds) - 1)
    ]
    del ds
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, real_texts):
    path = tmp_path_factory.mktemp("corpus") / "real.jsonl"
    return write_jsonl(path, [{"text": t, "id": i} for i, t in enumerate(real_texts)])


def test_round_trip_detokenizes_to_the_input_texts(tmp_path, corpus, real_texts, mistral_model):
    result = run_tool(
        "--input",
        corpus,
        "--output-prefix",
        tmp_path / "rt",
        "--tokenizer-type",
        "SentencePieceTokenizer",
        "--tokenizer-model",
        mistral_model,
        "--workers",
        1,
    )
    assert result.returncode == 0, result.stderr
    assert f"--data-path {tmp_path / 'rt'}_text_document" in result.stdout
    tokenizer = build_tokenizer("SentencePieceTokenizer", mistral_model)
    docs = documents(str(tmp_path / "rt_text_document"))
    assert len(docs) == len(real_texts)
    assert [tokenizer.decode(d) for d in docs] == real_texts


def test_matches_megatron_style_loop_and_any_worker_count(tmp_path, corpus, mistral_model):
    megatron_style_preprocess(corpus, str(tmp_path / "ref"), "MistralTokenizer", mistral_model, append_eod=True)
    # byte-range shards cut lines mid-way; threads split batches; the library path must agree too
    for workers, shard_bytes, threads, native in (
        (1, None, 1, True),
        (2, 64 * 1024, 1, True),
        (3, 100_003, 1, True),
        (1, None, 2, True),
        (2, 64 * 1024, 1, False),
    ):
        prefix = str(tmp_path / f"w{workers}t{threads}{native}")
        preprocess(
            PreprocessConfig(
                input=corpus,
                output_prefix=prefix,
                tokenizer=TokenizerSpec("MistralTokenizer", mistral_model, native=native),
                append_eod=True,
                workers=workers,
                shard_bytes=shard_bytes,
                threads_per_worker=threads,
            )
        )
        assert same_dataset(str(tmp_path / "ref_text_document"), prefix + "_text_document"), prefix
    assert not [p for p in os.listdir(tmp_path) if p.endswith((".tmp", ".old", ".commit"))]


def test_inputs_glob_directory_gz_and_zst(tmp_path, real_texts, mistral_model):
    import zstandard

    records = [{"text": t} for t in real_texts[:120]]
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    write_jsonl(src / "a.jsonl", records[:40])
    write_jsonl(src / "b.jsonl.gz", records[40:80], opener=gzip.open)
    with open(src / "nested" / "c.jsonl.zst", "wb") as raw:
        raw.write(zstandard.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in records[80:]).encode()))
    (src / "notes.txt").write_text("not an input")
    write_jsonl(tmp_path / "all.jsonl", records)
    megatron_style_preprocess(
        str(tmp_path / "all.jsonl"), str(tmp_path / "ref"), "SentencePieceTokenizer", mistral_model
    )
    for spec in (str(src), str(src / "**" / "*.jsonl*")):
        for workers in (1, 2):
            out = tmp_path / f"out{workers}"
            result = run_tool(
                "--input",
                spec,
                "--output-prefix",
                out,
                "--tokenizer-type",
                "SentencePieceTokenizer",
                "--tokenizer-model",
                mistral_model,
                "--workers",
                workers,
            )
            assert result.returncode == 0, result.stderr
            assert "3 file(s)" in result.stdout
            assert same_dataset(str(tmp_path / "ref_text_document"), f"{out}_text_document"), (spec, workers)


BAD_LINES = {
    "malformed JSON": b'{"text": "unterminated}\n',
    "missing key": b'{"body": "no text key here"}\n',
    "not a string": b'{"text": 42}\n',
    "invalid UTF-8": b'{"text": "caf\xe9 latin-1 bytes"}\n',
    "invalid Unicode": b'{"text": "lone \\ud800 surrogate"}\n',
    "not a JSON object": b'["a", "list"]\n',
    "too deeply nested": b"[" * 100_000 + b"\n",  # RecursionError (a traceback) before
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
@pytest.mark.parametrize("workers", [1, 2])
def test_bad_line_fails_with_file_and_line_and_leaves_nothing(tmp_path, kind, workers, mistral_model):
    good = [json.dumps({"text": f"Document number {i} is fine."}).encode() + b"\n" for i in range(3000)]
    bad_at = 2500  # deep in the file: with 2 workers it falls in a later byte-range shard
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(good[:bad_at] + [BAD_LINES[kind]] + good[bad_at:]))
    # --shard-bytes forces several byte-range shards on this small file
    result = run_tool(
        "--input",
        path,
        "--output-prefix",
        tmp_path / "out" / "x",
        "--tokenizer-type",
        "SentencePieceTokenizer",
        "--tokenizer-model",
        mistral_model,
        "--workers",
        workers,
        "--shard-bytes",
        20000,
    )
    assert result.returncode == 1
    assert f"{path}:{bad_at + 1}: {kind}" in result.stderr
    leftovers = (
        [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "out") for f in fs]
        if (tmp_path / "out").exists()
        else []
    )
    assert leftovers == []


def test_skip_bad_lines_counts_and_reports_them(tmp_path, mistral_model):
    lines = (
        [json.dumps({"text": "first good"}).encode() + b"\n"]
        + list(BAD_LINES.values())
        + [json.dumps({"text": "last good"}).encode() + b"\n", b"\n"]
    )
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(lines))
    result = run_tool(
        "--input",
        path,
        "--output-prefix",
        tmp_path / "x",
        "--tokenizer-type",
        "SentencePieceTokenizer",
        "--tokenizer-model",
        mistral_model,
        "--workers",
        1,
        "--skip-bad-lines",
    )
    assert result.returncode == 0, result.stderr
    assert f"skipped lines    {len(BAD_LINES)}:" in result.stdout
    for kind in BAD_LINES:
        assert f"{kind} 1" in result.stdout
    assert f"{path}:2: malformed JSON" in result.stdout
    tokenizer = build_tokenizer("SentencePieceTokenizer", mistral_model)
    assert [tokenizer.decode(d) for d in documents(str(tmp_path / "x_text_document"))] == ["first good", "last good"]


def test_empty_documents_and_eod_like_megatron(tmp_path, mistral_model):
    records = [{"text": "alpha"}, {"text": ""}, {"text": "beta gamma"}, {"text": ""}]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    megatron_style_preprocess(path, str(tmp_path / "ref"), "SentencePieceTokenizer", mistral_model, append_eod=True)
    preprocess(
        PreprocessConfig(
            input=path,
            output_prefix=str(tmp_path / "ours"),
            tokenizer=TokenizerSpec("SentencePieceTokenizer", mistral_model),
            append_eod=True,
        )
    )
    assert same_dataset(str(tmp_path / "ref_text_document"), str(tmp_path / "ours_text_document"))
    docs = documents(str(tmp_path / "ours_text_document"))
    assert docs[1] == [] and docs[3] == []  # empty texts: empty documents, no EOD
    assert docs[0][-1] == 2 and docs[2][-1] == 2  # </s> ends every non-empty document


def test_sentence_lists_and_several_json_keys(tmp_path, mistral_model):
    records = [
        {"text": ["One sentence.", "", "Two sentences."], "title": "A title"},
        {"text": "Plain text.", "title": ""},
        {"text": [], "title": "Another"},
    ]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    megatron_style_preprocess(
        path,
        str(tmp_path / "ref"),
        "SentencePieceTokenizer",
        mistral_model,
        json_keys=["text", "title"],
        append_eod=True,
    )
    result = run_tool(
        "--input",
        path,
        "--output-prefix",
        tmp_path / "ours",
        "--json-keys",
        "text",
        "title",
        "--tokenizer-type",
        "SentencePieceTokenizer",
        "--tokenizer-model",
        mistral_model,
        "--append-eod",
    )
    assert result.returncode == 0, result.stderr
    for key in ("text", "title"):
        assert same_dataset(str(tmp_path / f"ref_{key}_document"), str(tmp_path / f"ours_{key}_document")), key
    ds = IndexedDataset(str(tmp_path / "ours_text_document"))
    assert ds.document_indices.tolist() == [0, 2, 3, 3]  # 2 non-empty sentences, 1 plain text, 1 empty list
    del ds


def test_huggingface_tokenizer_json(tmp_path, real_texts):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(real_texts, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>", "<s>", "</s>"]))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    model_dir = tmp_path / "hf"
    model_dir.mkdir()
    tok.save(str(model_dir / "tokenizer.json"))
    (model_dir / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "bos_token": "<s>"}))
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in real_texts[:50]])
    for extra, with_bos in (([], True), (["--tokenizer-hf-no-include-special-tokens"], False)):
        out = tmp_path / ("with" if with_bos else "without")
        result = run_tool(
            "--input",
            path,
            "--output-prefix",
            out,
            "--tokenizer-type",
            "HuggingFaceTokenizer",
            "--tokenizer-model",
            model_dir,
            "--append-eod",
            "--workers",
            2,
            *extra,
        )
        assert result.returncode == 0, result.stderr
        docs = documents(f"{out}_text_document")
        for text, doc in zip(real_texts[:50], docs):
            expected = tok.encode(text, add_special_tokens=with_bos).ids + [2]
            assert doc == expected
        assert IndexedDataset(f"{out}_text_document").index.dtype == np.uint16


def test_unknown_tokenizer_type_and_missing_model_are_clear(tmp_path, corpus, mistral_model):
    result = run_tool(
        "--input",
        corpus,
        "--output-prefix",
        tmp_path / "x",
        "--tokenizer-type",
        "SentencePieceTokenizer",
        "--tokenizer-model",
        tmp_path / "nope.model",
    )
    assert result.returncode == 1 and "nope.model: no such file" in result.stderr
    result = run_tool(
        "--input",
        tmp_path / "missing.jsonl",
        "--output-prefix",
        tmp_path / "x",
        "--tokenizer-type",
        "SentencePieceTokenizer",
        "--tokenizer-model",
        mistral_model,
    )
    assert result.returncode == 1 and "missing.jsonl: no such file or directory" in result.stderr
