"""Megatron-LM's preprocessing interface: GPT2BPETokenizer from vocab.json + merges.txt, the other flags of its
tools/preprocess_data.py, and multi-node preprocessing (--num-shards/--shard-index, then tools/merge_datasets.py)."""

import gzip
import os
import shutil

import pytest

from megatron_ipt.packing.preprocess import PreprocessConfig, preprocess
from megatron_ipt.tokenizers import TokenizerSpec, build_tokenizer
from tests.conftest import write_jsonl
from tests.packing.test_preprocess import documents, run_tool, same_dataset
from tools import merge_datasets, preprocess_data


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory, real_texts):
    """A GPT-2-style vocab.json + merges.txt, trained here on real text (GPT-2's own files need the hub)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1200, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(real_texts[:300], trainer)
    directory = tmp_path_factory.mktemp("gpt2")
    tok.model.save(str(directory))
    return str(directory / "vocab.json"), str(directory / "merges.txt")


def test_gpt2_bpe_ids_equal_hugging_face_gpt2_tokenizer(gpt2_files, real_texts):
    # megatron-core encodes GPT2BPETokenizer with Hugging Face's GPT-2 tokenizer over the same two files
    from transformers import GPT2Tokenizer

    vocab, merges = gpt2_files
    reference = GPT2Tokenizer.from_pretrained(os.path.dirname(vocab))
    ours = build_tokenizer("GPT2BPETokenizer", vocab, merge_file=merges)
    assert ours.native  # our encoder, GPT-2's regex; the library only for texts holding <|endoftext|>
    tricky = ["don't  \n\n  I'M 12345 x<|endoftext|>y", "", " ", "\u00e9t\u00e9 \u4e2d\u6587 \U0001f600 \t\r\n"]
    texts = real_texts + tricky
    assert ours.encode_batch(texts) == [reference.encode(t) for t in texts]
    assert ours.eod == reference.eos_token_id and ours.vocab_size == len(reference)
    assert ours.decode(ours.encode(real_texts[3])) == real_texts[3]


def test_preprocess_with_vocab_and_merge_files(tmp_path, gpt2_files, real_texts):
    vocab, merges = gpt2_files
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in real_texts[:80]])
    common = ["--input", path, "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", vocab, "--merge-file", merges]
    result = run_tool(*common, "--output-prefix", tmp_path / "g", "--append-eod", "--workers", 2, "--vocab-size", 1200)
    assert result.returncode == 0, result.stderr
    tokenizer = build_tokenizer("GPT2BPETokenizer", vocab, merge_file=merges)
    assert documents(f"{tmp_path}/g_text_document") == [tokenizer.encode(t) + [tokenizer.eod] for t in real_texts[:80]]
    # the spec prints flags that give it back (what build_corpus prints for this tool)
    spec = preprocess_data.parse_args(["--input", "x", "--output-prefix", "y", *common[2:]]).tokenizer
    again = preprocess_data.parse_args(["--input", "x", "--output-prefix", "y", *spec.to_flags().split()]).tokenizer
    assert spec == again == TokenizerSpec("GPT2BPETokenizer", vocab, merge_file=merges)
    small = run_tool(*common, "--output-prefix", tmp_path / "s", "--vocab-size", 1000)
    assert small.returncode == 1 and "--vocab-size 1000: the tokenizer" in small.stderr
    assert not os.path.exists(f"{tmp_path}/s_text_document.bin")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--use-gigatoken", "--no-native-tokenizer"], "--use-gigatoken asks for a native encoder"),
        (["--max-documents", "10"], "--max-documents only sets the size of each --find-optimal-num-workers trial"),
        (["--split-sentences"], "--split-sentences is not supported"),
        (["--vocab-file", "v.json"], "argument --vocab-file: not allowed with argument --tokenizer-model"),
        (["--chat-template", "x"], "--chat-template is not supported"),
        (["--shard-index", "2", "--num-shards", "2"], "--shard-index 2 of --num-shards 2"),
        (["--vocab-extra-ids", "100"], "--vocab-extra-ids: only 0 is supported"),
    ],
)
def test_megatron_flags_refused_with_a_reason(flags, message, capsys):
    base = ["--input", "in.jsonl", "--output-prefix", "x", "--tokenizer-type", "MistralTokenizer"]
    with pytest.raises(SystemExit):
        preprocess_data.parse_args([*base, "--tokenizer-model", "m.model", *flags])
    assert message in capsys.readouterr().err


def test_megatron_no_op_flags_are_accepted():
    args = preprocess_data.parse_args(
        "--input in.jsonl --output-prefix x --tokenizer-type HuggingFaceTokenizer --tokenizer-model t.json "
        "--keep-newlines --lang english --partitions 2 --keep-sequential-samples --tiktoken-pattern v2 "
        "--trust-remote-code --padded-vocab-size 128256 --no-pad-vocab-size --workers 4".split()
    )
    assert args.tokenizer == TokenizerSpec("HuggingFaceTokenizer", "t.json")


def test_tokenizer_mistakes_megatron_users_make_are_explained(tmp_path, mistral_model, real_texts):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in real_texts[:5]])
    out = ["--input", path, "--output-prefix", tmp_path / "x"]
    # Megatron-LM's docs give HuggingFaceTokenizer a SentencePiece tokenizer.model
    result = run_tool(*out, "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", mistral_model)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is a SentencePiece model, not a tokenizer.json: give it with --tokenizer-type SentencePieceTokenizer" in (
        result.stderr
    )
    result = run_tool(
        *out, "--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", "meta-llama/Meta-Llama-3-8B"
    )
    assert result.returncode == 1 and "no hub is reachable from here" in result.stderr
    assert "pass their local directory" in result.stderr
    (tmp_path / "meta.json").write_text('{"library": "huggingface"}')
    result = run_tool(*out, "--tokenizer-type", "MistralTokenizer", "--tokenizer-model", mistral_model,
                      "--tokenizer-metadata", tmp_path / "meta.json")  # fmt: skip
    assert result.returncode == 1 and "names library 'huggingface', but --tokenizer-type MistralTokenizer" in (
        result.stderr
    )


def test_find_optimal_num_workers_times_each_count_and_writes_nothing(tmp_path, mistral_model, real_texts, capsys):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in real_texts])
    code = preprocess_data.main(
        ["--input", path, "--output-prefix", str(tmp_path / "out" / "x"), "--tokenizer-type", "MistralTokenizer",
         "--tokenizer-model", mistral_model, "--find-optimal-num-workers", "--workers-to-check", "1", "2",
         "--max-documents", "200"]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "Performance results (fastest → slowest):" in printed and "The most optimal num of workers is" in printed
    assert " 1 workers → avg. docs/s:" in printed and " 2 workers → avg. docs/s:" in printed
    assert os.listdir(tmp_path / "out") == []


def test_sharded_runs_merged_equal_one_run_byte_for_byte(tmp_path, mistral_model, real_texts):
    # a directory of three files: a big plain one (cut by byte ranges), a .gz (whole) and a small plain one
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "a.jsonl", [{"text": t} for t in real_texts[:300]])
    write_jsonl(src / "b.jsonl.gz", [{"text": t} for t in real_texts[300:400]], opener=gzip.open)
    write_jsonl(src / "c.jsonl", [{"text": t} for t in real_texts[400:]])
    spec = TokenizerSpec("MistralTokenizer", mistral_model)
    config = PreprocessConfig(input=str(src), output_prefix=str(tmp_path / "one"), tokenizer=spec, append_eod=True)
    preprocess(config)
    num_shards = 5
    parts = tmp_path / "parts"
    for i in range(num_shards):  # what the Slurm array's tasks do, one each (the last with 2 workers)
        preprocess(
            PreprocessConfig(
                input=str(src),
                output_prefix=str(parts / f"part-{i:05d}"),
                tokenizer=spec,
                append_eod=True,
                num_shards=num_shards,
                shard_index=i,
                workers=2 if i == num_shards - 1 else 1,
                shard_bytes=50_000,
            )
        )
    assert merge_datasets.main(["--input", str(parts), "--output-prefix", str(tmp_path / "merged")]) == 0
    assert same_dataset(str(tmp_path / "one_text_document"), str(tmp_path / "merged"))
    # every task got some lines, and none twice: the documents add up
    counts = [len(documents(str(parts / f"part-{i:05d}_text_document"))) for i in range(num_shards)]
    assert all(counts) and sum(counts) == len(real_texts)


def test_merge_datasets_errors(tmp_path, capsys):
    assert merge_datasets.main(["--input", str(tmp_path / "none"), "--output-prefix", str(tmp_path / "m")]) == 1
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "lone.bin").write_bytes(b"")
    assert merge_datasets.main(["--input", str(tmp_path / "d"), "--output-prefix", str(tmp_path / "m")]) == 1
    assert "lone.bin: its .idx file is missing" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "d")
    (tmp_path / "d").mkdir()
    assert merge_datasets.main(["--input", str(tmp_path / "d"), "--output-prefix", str(tmp_path / "d" / "m")]) == 1
    assert "no .bin/.idx datasets" in capsys.readouterr().err


def test_use_gigatoken_is_accepted_and_says_which_encoder_runs(tmp_path, real_texts):
    from megatron_ipt import assets

    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in real_texts[:20]])
    model = assets.mistral_tokenizer_model()
    common = ["--input", path, "--tokenizer-type", "MistralTokenizer", "--tokenizer-model", model, "--append-eod"]
    fast = run_tool(*common, "--output-prefix", tmp_path / "g", "--use-gigatoken")
    assert fast.returncode == 0, fast.stderr
    assert "--use-gigatoken: tokenizing with our native encoder, not GigaToken" in fast.stderr
    assert "(native encoder)" in fast.stdout
    plain = run_tool(*common, "--output-prefix", tmp_path / "p")
    assert plain.returncode == 0, plain.stderr
    assert same_dataset(f"{tmp_path}/g_text_document", f"{tmp_path}/p_text_document")
