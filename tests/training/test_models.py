"""GPU-only paths fail with a clear message on a machine without Transformer Engine."""

import pytest

from megatron_ipt.training import config, models

BASE = ["--model", "tiny", "--micro-batch-size", "1", "--train-iters", "1"]


def _args(*extra):
    args = config.parse_args(BASE + list(extra))
    args.virtual_pipeline_model_parallel_size = None
    return args


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
        models.transformer_config(_args(*flags))


def test_local_spec_without_te_and_padded_vocab():
    args = _args()
    cfg = models.transformer_config(args)
    assert args.transformer_impl == ("transformer_engine" if models.transformer_engine_available() else "local")
    assert (cfg.normalization, cfg.gated_linear_unit, cfg.add_bias_linear) == ("RMSNorm", True, False)
    assert models.pad_vocab(32000, 1) == 32000 and models.pad_vocab(32000, 3) == 32256


def test_fp8_needs_bf16():
    with pytest.raises(SystemExit, match="needs --bf16"):
        config.parse_args(BASE + ["--fp8-format", "hybrid"])
