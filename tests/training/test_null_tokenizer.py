"""Megatron-LM's benchmark and pre-tokenized-data launch lines: `--tokenizer-type NullTokenizer --vocab-size N`, with
--mock-data or with data packed by tools/preprocess_data.py from token ids."""

import math
import re

import pytest

from megatron_ipt import assets
from megatron_ipt.tokenizers import build_tokenizer
from tests import launch
from tests.conftest import write_jsonl
from tests.training.helpers import training_config

RUN = ["--micro-batch-size", "2", "--train-iters", "3", "--lr", "1e-3", "--log-interval", "1"]
NULL = ["--tokenizer-type", "NullTokenizer", "--vocab-size", "1024"]


def test_the_model_vocabulary_is_the_tokenizers_then_padded():
    # Megatron-LM: tokenizer.vocab_size = N + 1 (its EOD is N), padded to a multiple of 128 x TP
    shape = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "64"]
    for model in (["--model", "tiny"], shape):
        cfg = training_config([*model, "--mock-data", *NULL, *RUN])
        assert cfg.model.vocab_size == 1025 and cfg.data.tokenizer.build().eod == 1024
        assert cfg.model.padded_vocab_size(1) == 1152 and cfg.model.padded_vocab_size(2) == 1280
    with pytest.raises(SystemExit, match="NullTokenizer needs --vocab-size N"):  # never the preset's 32000
        training_config(["--model", "tiny", "--mock-data", "--tokenizer-type", "NullTokenizer", *RUN])


def _losses(out):
    losses = [float(x) for x in re.findall(r"\| lm loss: ([0-9.E+-]+) \|", out)]
    assert len(losses) == 3 and "training done at iteration 3" in out, out[-3000:]
    return losses


def test_pretrain_with_mock_data_and_with_preprocessed_ids(tmp_path):
    out = launch.run("tools/pretrain.py", "--model", "tiny", "--mock-data", *NULL, *RUN, nproc=1, timeout=180)
    assert "  padded_vocab_size " + "." * (48 - len("padded_vocab_size")) + " 1152\n" in out
    # a fresh model's loss is about ln(padded vocabulary): the ids fed it are the mock ones, below 1025
    assert all(abs(loss - math.log(1152)) < 0.3 for loss in _losses(out))

    # data tokenized elsewhere (here: Mistral ids of real text), written as ids, packed with NullTokenizer
    mistral = build_tokenizer("SentencePieceTokenizer", assets.mistral_tokenizer_model())
    ids = mistral.encode_batch(assets.opticks_paragraphs()[:60])
    path = write_jsonl(tmp_path / "ids.jsonl", [{"text": " ".join(map(str, doc))} for doc in ids])
    null = ["--tokenizer-type", "NullTokenizer", "--vocab-size", str(mistral.vocab_size)]
    prefix = tmp_path / "ids"
    launch.run("tools/preprocess_data.py", "--input", path, "--output-prefix", prefix, *null, "--append-eod")
    data = ["--data-path", f"{prefix}_text_document", "--split", "90,10,0", "--eval-iters", "1"]
    out = launch.run("tools/pretrain.py", "--model", "tiny", *data, *null, *RUN, nproc=1, timeout=180)
    assert all(math.isfinite(loss) for loss in _losses(out))
