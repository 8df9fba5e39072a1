"""GPU-only paths fail with a clear message on a machine without Transformer Engine."""

import pytest

from megatron_ipt.training import model_config, models
from tests.training.helpers import training_config

BASE = ["--model", "tiny", "--micro-batch-size", "1", "--train-iters", "1"]


def _transformer_config(*extra):
    cfg = training_config(BASE + list(extra))
    return models.transformer_config(cfg.model, cfg.parallel, cfg.precision)


@pytest.mark.skipif(models.transformer_engine_available(), reason="Transformer Engine is installed")
@pytest.mark.parametrize(
    "flags, what",
    [
        (["--bf16", "--fp8-format", "hybrid"], "--fp8-format"),
        (["--tensor-model-parallel-size", "2", "--sequence-parallel"], "--sequence-parallel"),
        (["--transformer-impl", "transformer_engine"], "--transformer-impl"),
    ],
)
def test_te_only_features_name_what_is_missing(flags, what):
    with pytest.raises(RuntimeError, match=f"Transformer Engine is not importable here; {what}.*pip install"):
        _transformer_config(*flags)


def test_local_spec_without_te_and_padded_vocab():
    cfg = _transformer_config()
    impl = models.transformer_impl(training_config(BASE).precision)
    assert impl == ("transformer_engine" if models.transformer_engine_available() else "local")
    assert (cfg.normalization, cfg.gated_linear_unit, cfg.add_bias_linear) == ("RMSNorm", True, False)
    assert model_config.pad_vocab(32000, 1) == 32000 and model_config.pad_vocab(32000, 3) == 32256


def test_fp8_needs_bf16():
    with pytest.raises(SystemExit, match="needs --bf16"):
        training_config(BASE + ["--fp8-format", "hybrid"])
