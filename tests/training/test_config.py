"""The typed training config: flags -> frozen dataclasses, derived values resolved once, model files checked."""

import dataclasses
import json

import pytest

from megatron_ipt.training import config, model_config, presets
from tests.training.helpers import training_config


def test_preset_with_overrides_round_trips_through_the_flags():
    cfg = training_config(
        [
            "--model",
            "mistral-7b",
            "--num-layers",
            "4",
            "--untie-embeddings-and-output-weights",
            "--micro-batch-size",
            "2",
            "--train-iters",
            "5",
            "--tensor-model-parallel-size",
            "2",
            "--lr",
            "1e-3",
            "--data-path",
            "0.3",
            "a",
            "0.7",
            "b",
            "--tokenizer-type",
            "SentencePieceTokenizer",
            "--tokenizer-model",
            "tok.model",
        ]
    )
    expected = config.ModelConfig(**{**presets.PRESETS["mistral-7b"], "num_layers": 4})
    assert cfg.model == expected and cfg.model.source == "mistral-7b"
    assert (cfg.parallel.tensor_model_parallel_size, cfg.optimizer.lr, cfg.optimizer.train_iters) == (2, 1e-3, 5)
    assert cfg.data.data_path == ("0.3", "a", "0.7", "b")
    assert (cfg.data.tokenizer.type, cfg.data.tokenizer.model) == ("SentencePieceTokenizer", "tok.model")
    # flags left out take the dataclasses' defaults
    defaults = training_config(["--model", "tiny", "--micro-batch-size", "1", "--train-iters", "1"])
    assert defaults.model == config.ModelConfig.load("tiny")
    assert defaults.parallel == config.ParallelConfig() and defaults.precision == config.PrecisionConfig()
    assert defaults.logging == config.LoggingConfig() and defaults.checkpoint == config.CheckpointConfig()
    assert defaults.optimizer == config.OptimizerConfig(micro_batch_size=1, train_iters=1)
    assert defaults.data == config.DataConfig()
    # the model as a model file, and back
    assert list(cfg.model.to_json()) == list(model_config.MODEL_FIELDS)
    assert config.ModelConfig(**cfg.model.to_json()) == cfg.model


def test_configs_are_frozen():
    cfg = training_config(["--model", "tiny", "--micro-batch-size", "1", "--train-iters", "1"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optimizer.global_batch_size = 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.num_layers = 4
    run = cfg.resolve(data_parallel_size=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.train_iters = 2


def test_resolve_derives_the_batch_values_once():
    cfg = training_config(
        ["--model", "tiny", "--micro-batch-size", "2", "--train-samples", "100", "--tensor-model-parallel-size", "3"]
    )
    run = cfg.resolve(data_parallel_size=4)
    # global batch defaults to micro batch x DP; iterations = floor(samples / global batch), as Megatron-LM
    assert (run.global_batch_size, run.num_microbatches, run.train_iters) == (8, 1, 12)
    assert run.padded_vocab_size == 32256  # 32000 rounded up to a multiple of 128 x TP 3
    assert cfg.optimizer.global_batch_size is None and cfg.optimizer.train_iters is None  # the config is unchanged
    cfg = training_config(
        ["--model", "tiny", "--micro-batch-size", "2", "--global-batch-size", "12", "--train-iters", "3"]
    )
    assert (cfg.resolve(2).num_microbatches, cfg.resolve(3).num_microbatches) == (3, 2)
    with pytest.raises(SystemExit, match="--global-batch-size 12 is not divisible by micro batch size 2 x data-par"):
        cfg.resolve(data_parallel_size=4)


def test_model_file_field_types_are_checked(tmp_path):
    path = tmp_path / "model.json"
    good = dict(presets.PRESETS["tiny"])
    path.write_text(json.dumps({**good, "hidden_size": "64"}))
    with pytest.raises(SystemExit, match="field 'hidden_size' is '64', expected int"):
        config.ModelConfig.load(str(path))
    path.write_text(json.dumps({**good, "untie_embeddings_and_output_weights": 1}))
    with pytest.raises(SystemExit, match="field 'untie_embeddings_and_output_weights' is 1, expected bool"):
        config.ModelConfig.load(str(path))
    path.write_text(json.dumps({**good, "vocab_size": 32000.0, "rotary_base": 10000}))  # integral floats are ints
    model = config.ModelConfig.load(str(path))
    assert (model.vocab_size, model.rotary_base) == (32000, 10000.0)
    assert type(model.vocab_size) is int and type(model.rotary_base) is float
