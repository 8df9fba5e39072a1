"""Model config -> megatron-core GPTModel chunks with the right layer spec (TE when it imports, else local): `build`,
the one way training, evaluation and conversion make a model."""

from __future__ import annotations

import importlib.util
from typing import List, Optional, Tuple

import torch
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer import TransformerConfig

from megatron_ipt.training import parallel as parallel_setup
from megatron_ipt.training.config import InitConfig, ModelConfig, ParallelConfig, PrecisionConfig

TE_MISSING = (
    "Transformer Engine is not importable here; {what} needs it. Install it on a CUDA machine with "
    "`pip install megatron-ipt[gpu]` (transformer-engine[pytorch])."
)


def transformer_engine_available() -> bool:
    try:
        return (
            importlib.util.find_spec("transformer_engine") is not None and __import__("transformer_engine") is not None
        )
    except Exception:
        return False


def transformer_impl(precision: PrecisionConfig) -> str:
    """--transformer-impl, or transformer_engine when it imports, else local."""
    if precision.transformer_impl == "transformer_engine" and not transformer_engine_available():
        raise RuntimeError(TE_MISSING.format(what="--transformer-impl transformer_engine"))
    return precision.transformer_impl or ("transformer_engine" if transformer_engine_available() else "local")


def transformer_config(
    model: ModelConfig, parallel: ParallelConfig, precision: PrecisionConfig, init_method_std: float = 0.02
) -> TransformerConfig:
    te = transformer_engine_available()
    if precision.fp8_format and not te:
        raise RuntimeError(TE_MISSING.format(what="--fp8-format"))
    if parallel.sequence_parallel and parallel.tensor_model_parallel_size > 1 and not te:
        raise RuntimeError(TE_MISSING.format(what="--sequence-parallel (it needs the TE or apex norm)"))
    transformer_impl(precision)
    dtype = precision.params_dtype
    kwargs = dict(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=model.num_query_groups,
        kv_channels=model.kv_channels,
        layernorm_epsilon=model.norm_epsilon,
        normalization="RMSNorm",
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        add_bias_linear=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=init_method_std,
        tensor_model_parallel_size=parallel.tensor_model_parallel_size,
        pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=parallel.virtual_pipeline_model_parallel_size(model.num_layers),
        sequence_parallel=parallel.sequence_parallel and parallel.tensor_model_parallel_size > 1,
        params_dtype=dtype,
        bf16=precision.bf16,
        fp16=precision.fp16,
        pipeline_dtype=dtype,
        use_cpu_initialization=not torch.cuda.is_available(),
        recompute_granularity=precision.recompute_granularity,
    )
    if precision.recompute_granularity == "full":
        kwargs.update(recompute_method=precision.recompute_method, recompute_num_layers=precision.recompute_num_layers)
    if precision.fp8_format:
        kwargs.update(
            fp8=precision.fp8_format,
            fp8_recipe="delayed",
            fp8_amax_history_len=precision.fp8_amax_history_len,
            fp8_amax_compute_algo=precision.fp8_amax_compute_algo,
        )
    return TransformerConfig(**kwargs)


def layer_spec(impl: str):
    if impl == "transformer_engine":
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec()
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    return get_gpt_layer_local_spec(normalization="RMSNorm")


def build(
    model: ModelConfig,
    parallel: ParallelConfig,
    precision: PrecisionConfig,
    init: Optional[InitConfig] = None,
    *,
    initialize_weights: bool = True,
) -> Tuple[List[GPTModel], TransformerConfig]:
    """Set up the process groups and seeds (parallel.initialize), then build this rank's GPTModel chunks (one per
    virtual pipeline stage). `init`: the seed and init std (default: Megatron-LM's); `initialize_weights=False` skips
    the random init, for models whose every parameter is loaded next. Returns the chunks and their TransformerConfig
    (the training loop wires its hooks into it)."""
    init = init or InitConfig()
    parallel_setup.initialize(parallel, model.num_layers, init.seed)
    config = transformer_config(model, parallel, precision, init.init_method_std)
    config.perform_initialization = initialize_weights
    spec = layer_spec(transformer_impl(precision))
    vocab_size = model.padded_vocab_size(parallel.tensor_model_parallel_size)
    vp = parallel.virtual_pipeline_model_parallel_size(model.num_layers) or 1
    chunks = []
    for vp_stage in range(vp):
        pre = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
        post = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
        extra = {"vp_stage": vp_stage} if vp > 1 else {}
        chunks.append(
            GPTModel(
                config=config,
                transformer_layer_spec=spec,
                vocab_size=vocab_size,
                max_sequence_length=model.max_position_embeddings,
                pre_process=pre,
                post_process=post,
                share_embeddings_and_output_weights=not model.untie_embeddings_and_output_weights,
                position_embedding_type="rope",
                rotary_base=_rotary_base(model.rotary_base),
                rope_scaling=model.use_rope_scaling,
                rope_scaling_factor=model.rope_scaling_factor,
                **extra,
            )
        )
    return chunks, config


def _rotary_base(base: float):
    return int(base) if float(base).is_integer() else base  # megatron types it int; HF thetas may be any float
