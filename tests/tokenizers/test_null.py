"""NullTokenizer (Megatron-LM's): pre-tokenized text, each document's token ids as decimal integers; --vocab-size N
takes ids 0..N-1 and N is the end of document."""

import os
import subprocess
import sys

import pytest

from megatron_ipt.tokenizers import NullTokenizer, TokenizerSpec, build_tokenizer
from tests.conftest import REPO, write_jsonl
from tests.packing.test_preprocess import documents
from tools import build_corpus, preprocess_data, synthesize

TOOL = os.path.join(REPO, "tools", "preprocess_data.py")


def run_tool(*args):
    return subprocess.run([sys.executable, TOOL, *map(str, args)], capture_output=True, text=True, cwd=REPO)


def test_megatrons_semantics():
    tok = build_tokenizer("NullTokenizer", None, vocab_size=1024)
    assert (tok.vocab_size, tok.eod, tok.bos) == (1025, 1024, None)  # Megatron: vocab_size + 1, EOD = vocab_size
    assert tok.encode("1 2 3") == [1, 2, 3]
    assert tok.encode_batch([" 7\n8\t\t9 ", "", "  ", "0 1023 007"]) == [[7, 8, 9], [], [], [0, 1023, 7]]
    assert tok.decode([1, 2, 3]) == "1 2 3"
    tokens, lengths = tok.encode_batch_flat(["1 2", "", "3"], append_id=tok.eod)
    assert tokens.tolist() == [1, 2, 1024, 3, 1024] and lengths.tolist() == [3, 0, 2]
    # the index cache's key changes with the vocabulary (a mock dataset's ids do)
    assert tok.unique_identifiers != NullTokenizer(1000).unique_identifiers


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 2 x3", "token 'x3' is not a decimal integer"),
        ("1 2.0", "token '2.0' is not a decimal integer"),
        ("1 +2", "token '+2' is not a decimal integer"),
        ("1 \u0663", "token '\u0663' is not a decimal integer"),  # a digit to int(), not ASCII
        ("1,2", "token '1,2' is not a decimal integer"),
        ("5 -3", "token -3 is negative"),
        ("5 1024", "token 1024 is outside --vocab-size 1024 (ids 0..1023; 1024 is the end-of-document id)"),
        ("1" * 5000, "is outside --vocab-size 1024"),  # past int()'s digit limit: still our message
    ],
)
def test_a_bad_token_is_named(text, message):
    with pytest.raises(ValueError) as error:
        NullTokenizer(1024).encode(text)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_preprocess_round_trips_the_ids_and_training_reads_them(tmp_path):
    lines = ["1 2 3", "  40\t5 \n6 ", "", "1023 0"]
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in lines])
    out = tmp_path / "out" / "ids"
    flags = ["--tokenizer-type", "NullTokenizer", "--vocab-size", 1024, "--append-eod", "--workers", 2]
    result = run_tool("--input", path, "--output-prefix", out, *flags)
    assert result.returncode == 0, result.stderr
    assert "NullTokenizer (built-in library), vocab 1,025" in result.stdout
    assert documents(f"{out}_text_document") == [[1, 2, 3, 1024], [40, 5, 6, 1024], [], [1023, 0, 1024]]


@pytest.mark.parametrize("workers", [1, 2])
def test_preprocess_names_the_file_line_and_token(tmp_path, workers):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "1 2 3"}] * 50 + [{"text": "4 5 1024"}] + [{"text": "6"}])
    result = run_tool(
        "--input", path, "--output-prefix", tmp_path / "x", "--tokenizer-type", "NullTokenizer", "--vocab-size", 1024,
        "--workers", workers, "--shard-bytes", 300,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"error: {path}:51: cannot tokenize: ValueError: NullTokenizer: token 1024 is outside" in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.glob("x_*"))


def parse_preprocess(*flags):
    return preprocess_data.parse_args(["--input", "in.jsonl", "--output-prefix", "x", *map(str, flags)])


def test_flags(capsys):
    spec = parse_preprocess("--tokenizer-type", "NullTokenizer", "--vocab-size", 32).tokenizer
    assert spec == TokenizerSpec("NullTokenizer", None, vocab_size=32)
    assert spec.to_flags() == "--tokenizer-type NullTokenizer --vocab-size 32"
    assert parse_preprocess(*spec.to_flags().split()).tokenizer == spec  # what a tool prints reads back
    assert spec.build().vocab_size == 33  # the EOD past --vocab-size is NullTokenizer's, not a misfit
    refusals = {
        ("--tokenizer-type", "NullTokenizer"): "NullTokenizer needs --vocab-size N",
        ("--tokenizer-type", "NullTokenizer", "--vocab-size", 0): "--vocab-size 0: --tokenizer-type NullTokenizer",
        ("--tokenizer-type", "NullTokenizer", "--vocab-size", -5): "--vocab-size -5: --tokenizer-type NullTokenizer",
        (
            "--tokenizer-type",
            "NullTokenizer",
            "--vocab-size",
            9,
            "--tokenizer-model",
            "t.model",
        ): "drop --tokenizer-model",
        ("--tokenizer-type", "NullTokenizer", "--vocab-size", 9, "--vocab-file", "v.json"): "drop --vocab-file v.json",
    }
    for flags, message in refusals.items():
        with pytest.raises(SystemExit) as error:
            parse_preprocess(*flags)
        assert message in str(error.value) and "\n" not in str(error.value)
    # still: a file-based type needs its file
    with pytest.raises(SystemExit):
        parse_preprocess("--tokenizer-type", "SentencePieceTokenizer")
    assert "one of the arguments --tokenizer-model --vocab-file is required" in capsys.readouterr().err


@pytest.mark.parametrize(
    "parse",
    [
        lambda flags: build_corpus.parse_args(["--recipe", "vanilla", "--output-dir", "out", *flags]),
        lambda flags: synthesize.build_parser().parse_args(["--input", "in.jsonl", "--output-dir", "out", *flags]),
    ],
    ids=["build_corpus", "synthesize"],
)
def test_text_tools_refuse_it_in_one_line(parse, capsys):
    with pytest.raises(SystemExit):
        parse(["--tokenizer-type", "NullTokenizer", "--tokenizer-model", "x"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --tokenizer-type: NullTokenizer is not for this tool: its text is token ids" in err
