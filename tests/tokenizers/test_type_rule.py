"""No tokenizer type is assumed silently (issue 24): without --tokenizer-type a tool infers the type only where the
files given leave one choice, says so in a `note:` line, and otherwise stops with one line asking for the type and
naming the ones that fit. On main before this rule, --vocab-file + --merge-file failed with "(got --tokenizer-type
SentencePieceTokenizer)" in tools/pretrain.py and with "required: --tokenizer-type" in tools/preprocess_data.py."""

import pytest

from megatron_ipt.tokenizers import TokenizerSpec, build_tokenizer
from megatron_ipt.tokenizers import spec as spec_module
from tests import launch
from tests.conftest import write_jsonl
from tests.packing.test_megatron_flags import gpt2_files as gpt2_files  # noqa: F401 - the fixture
from tests.packing.test_preprocess import documents, run_tool
from tests.tokenizers.test_spec import TOOLS
from tools import preprocess_data

INFERRED_GPT2 = "note: --tokenizer-type GPT2BPETokenizer inferred: the only type that reads --vocab-file + --merge-file"


def test_vocab_and_merges_infer_gpt2_with_a_note_and_pack_and_train(tmp_path, gpt2_files, real_texts):  # noqa: F811
    vocab, merges = gpt2_files
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in real_texts[:80]])
    files = ["--vocab-file", vocab, "--merge-file", merges]
    result = run_tool("--input", path, "--output-prefix", tmp_path / "g", "--append-eod", *files)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(INFERRED_GPT2) == 1
    tokenizer = build_tokenizer("GPT2BPETokenizer", vocab, merge_file=merges)
    assert documents(f"{tmp_path}/g_text_document") == [tokenizer.encode(t) + [tokenizer.eod] for t in real_texts[:80]]

    # tools/pretrain.py (two ranks): trains on it, the note printed once
    out = launch.run(
        "tools/pretrain.py",
        *["--model", "tiny", "--micro-batch-size", "2", "--train-iters", "2", "--split", "100,0,0"],
        *["--data-path", f"{tmp_path}/g_text_document", *files, "--log-interval", "1"],
        nproc=2,
        timeout=300,
    )
    assert out.count(INFERRED_GPT2) == 1 and "training done at iteration 2" in out


@pytest.mark.parametrize("tool", TOOLS)
def test_each_tool_infers_only_what_the_files_leave_no_choice_about(tool, tmp_path, mistral_model, capsys):
    inferred = {
        mistral_model: "SentencePieceTokenizer",  # its content: a SentencePiece model
        str(tmp_path): "HuggingFaceTokenizer",  # a directory (tokenizer.json inside)
        "cl100k_base.tiktoken": "TiktokenFileTokenizer",
    }
    for path, kind in inferred.items():
        spec_module._noted.clear()  # a note is printed once per process; earlier tests may have printed it
        assert TokenizerSpec.from_args(TOOLS[tool](["--tokenizer-model", path])) == TokenizerSpec(kind, path)
        assert f"note: --tokenizer-type {kind} inferred from --tokenizer-model {path}" in capsys.readouterr().err

    not_a_model = tmp_path / "tokenizer.model"
    not_a_model.write_text("not a SentencePiece model")
    for path, why, choices in (
        (
            str(not_a_model),
            "it does not load as a SentencePiece model and its name says no other kind",
            "SentencePieceTokenizer, GPTSentencePieceTokenizer, Llama2Tokenizer, MistralTokenizer",
        ),
        (
            str(tmp_path / "missing.bin"),
            "no such file",
            "SentencePieceTokenizer, GPTSentencePieceTokenizer, Llama2Tokenizer, MistralTokenizer, "
            "HuggingFaceTokenizer, Llama3Tokenizer, TiktokenFileTokenizer",
        ),
    ):
        with pytest.raises(SystemExit) as stop:
            TokenizerSpec.from_args(TOOLS[tool](["--tokenizer-model", path]))
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err == (
            f"error: --tokenizer-model {path}: give --tokenizer-type (no type is assumed; {why}; for these files: "
            f"{choices})\n"
        )

    with pytest.raises(SystemExit) as stop:
        TokenizerSpec.from_args(TOOLS[tool](["--vocab-file", "vocab.json"]))
    assert stop.value.code == 2
    assert "--vocab-file without --merge-file: give --tokenizer-type" in capsys.readouterr().err


def test_a_given_type_is_never_second_guessed(mistral_model, capsys):
    args = preprocess_data.parse_args(
        [
            "--input",
            "x",
            "--output-prefix",
            "y",
            "--tokenizer-type",
            "MistralTokenizer",
            "--tokenizer-model",
            mistral_model,
        ]
    )
    assert args.tokenizer.type == "MistralTokenizer" and "note:" not in capsys.readouterr().err


def test_pretrain_and_evaluate_have_no_default_type():
    from megatron_ipt.training import config

    assert config.build_parser().parse_args(["--micro-batch-size", "1"]).tokenizer_type is None
    assert "default: SentencePieceTokenizer" not in config.build_parser().format_help()
