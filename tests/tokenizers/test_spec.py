"""TokenizerSpec: every tool's parser reads the same tokenizer flags into the same spec (add_tokenizer_args)."""

import json
import pickle

import pytest

from megatron_ipt.tokenizers import TokenizerSpec, build_tokenizer
from tools import build_corpus, preprocess_data, synthesize

# Each tool's parser with its own required flags filled in; the tokenizer flags come after.
TOOLS = {
    "preprocess_data": lambda flags: preprocess_data.parse_args(
        ["--input", "in.jsonl", "--output-prefix", "x", *flags]
    ),
    "build_corpus": lambda flags: build_corpus.parse_args(["--recipe", "vanilla", "--output-dir", "out", *flags]),
    "synthesize": lambda flags: synthesize.build_parser().parse_args(
        ["--input", "in.jsonl", "--output-dir", "out", *flags]
    ),
}

SPECS = [
    TokenizerSpec("SentencePieceTokenizer", "m.model"),
    TokenizerSpec("Llama3Tokenizer", "hf_dir", include_special_tokens=False),
    TokenizerSpec("TiktokenFileTokenizer", "cl100k.tiktoken", tiktoken_pattern="llama3", native=False),
]


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.type)
def test_each_tool_reads_the_flags_it_prints_into_the_same_spec(tool, spec):
    # to_flags is what build_corpus prints for preprocess_data; every tool must read it back unchanged
    assert TokenizerSpec.from_args(TOOLS[tool](spec.to_flags().split())) == spec


@pytest.mark.parametrize("tool", TOOLS)
def test_each_tool_reads_every_flag(tool):
    flags = [
        "--tokenizer-type",
        "HuggingFaceTokenizer",
        "--tokenizer-model",
        "tok.json",
        "--tokenizer-hf-no-include-special-tokens",
        "--tiktoken-file-pattern",
        "llama3",
        "--no-native-tokenizer",
    ]
    assert TokenizerSpec.from_args(TOOLS[tool](flags)) == TokenizerSpec(
        "HuggingFaceTokenizer", "tok.json", include_special_tokens=False, tiktoken_pattern="llama3", native=False
    )
    defaults = TokenizerSpec.from_args(TOOLS[tool](["--tokenizer-type", "MistralTokenizer", "--tokenizer-model", "m"]))
    assert defaults == TokenizerSpec("MistralTokenizer", "m", include_special_tokens=True, tiktoken_pattern="cl100k")
    assert defaults.native


@pytest.mark.parametrize("tool", ["preprocess_data", "build_corpus"])
def test_packing_and_corpus_tools_require_the_type_and_the_model(tool, capsys):
    with pytest.raises(SystemExit):  # a file of no kind we can tell: the type is asked for (test_type_rule.py)
        TokenizerSpec.from_args(TOOLS[tool](["--tokenizer-model", "m.model"]))
    assert "give --tokenizer-type" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        TOOLS[tool](["--tokenizer-type", "SentencePieceTokenizer"])
    assert "required" in capsys.readouterr().err


def test_synthesize_tokenizer_is_optional_and_an_alias_of_tokenizer_model(tmp_path, mistral_model):
    assert TokenizerSpec.from_args(TOOLS["synthesize"]([])) is None
    for path, inferred in (
        (str(tmp_path), "HuggingFaceTokenizer"),  # an HF directory
        ("hf/tokenizer.json", "HuggingFaceTokenizer"),
        ("cl100k_base.tiktoken", "TiktokenFileTokenizer"),
        (mistral_model, "SentencePieceTokenizer"),  # by its content: a SentencePiece model
    ):
        alias = TokenizerSpec.from_args(TOOLS["synthesize"](["--tokenizer", path]))
        assert alias == TokenizerSpec.from_args(TOOLS["synthesize"](["--tokenizer-model", path]))
        assert alias == TokenizerSpec(inferred, path)
        assert TokenizerSpec.infer_type(path) == inferred
    explicit = TokenizerSpec.from_args(
        TOOLS["synthesize"](["--tokenizer", "m.model", "--tokenizer-type", "Llama2Tokenizer"])
    )
    assert explicit == TokenizerSpec("Llama2Tokenizer", "m.model")


def test_spec_pickles_for_workers_and_builds_the_same_tokenizer(mistral_model, real_texts):
    spec = TokenizerSpec("MistralTokenizer", mistral_model, native=False)
    copy = pickle.loads(pickle.dumps(spec))
    assert copy == spec and hash(copy) == hash(spec)
    ours, reference = copy.build(num_threads=2), build_tokenizer("MistralTokenizer", mistral_model, native=False)
    assert not ours.native and ours.num_threads == 2
    assert ours.encode_batch(real_texts[:50]) == reference.encode_batch(real_texts[:50])


def test_length_guard_counts_never_add_special_tokens(tmp_path, real_texts):
    from megatron_ipt.synthesis.engines.base import load_token_counter
    from tests.tokenizers.test_bytelevel import llama3_style_tokenizer_json

    (tmp_path / "tokenizer.json").write_text(json.dumps(llama3_style_tokenizer_json(real_texts[:200], True)))
    spec = TokenizerSpec("HuggingFaceTokenizer", str(tmp_path))  # adds <|begin_of_text|> to documents
    count = load_token_counter(spec)
    text = "<s> " + real_texts[0]  # prompts carry their own BOS
    assert len(spec.build().encode(text)) == count(text) + 1
