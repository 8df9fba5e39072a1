"""Model config -> megatron-core GPTModel chunks with the right layer spec (TE when it imports, else local): `build`,
the one way training, evaluation and conversion make a model."""

from __future__ import annotations

import importlib.util
from typing import List, Optional, Tuple

import torch
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.enums import AttnBackend

from megatron_ipt.errors import UnavailableError
from megatron_ipt.training import parallel as parallel_setup
from megatron_ipt.training.config import InitConfig, ParallelConfig, PrecisionConfig
from megatron_ipt.training.model_config import ModelConfig

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
        raise UnavailableError(TE_MISSING.format(what="--transformer-impl transformer_engine"))
    return precision.transformer_impl or ("transformer_engine" if transformer_engine_available() else "local")


def check_buildable(model: ModelConfig, parallel: ParallelConfig, precision: PrecisionConfig) -> None:
    """Stop, naming the flag, where this machine cannot build what the flags describe."""
    te = transformer_engine_available()
    if precision.fp8_format and not te:
        raise UnavailableError(TE_MISSING.format(what="--fp8-format"))
    if parallel.sequence_parallel and parallel.tensor_model_parallel_size > 1 and not te:
        raise UnavailableError(TE_MISSING.format(what="--sequence-parallel (it needs the TE or apex norm)"))
    if parallel.context_parallel_size > 1 and not te:
        raise UnavailableError(
            TE_MISSING.format(what="--context-parallel-size > 1 (TE's attention splits the sequence)")
        )
    impl = transformer_impl(precision)
    if precision.attention_backend == "local" and impl == "transformer_engine" and parallel.context_parallel_size > 1:
        raise UnavailableError("--attention-backend local cannot split sequences: drop it for --context-parallel-size")
    if precision.attention_backend in ("flash", "fused", "unfused") and impl == "local":
        pass  # a kernel choice among TE's: reported as a no-op at start-up (attention_notes)


def attention_notes(precision: PrecisionConfig) -> list:
    """Start-up notes for flags that select a kernel this machine does not have."""
    if precision.attention_backend in ("flash", "fused", "unfused") and transformer_impl(precision) == "local":
        return [
            f"--attention-backend {precision.attention_backend}: selects among Transformer Engine's attention "
            "kernels; without TE attention is megatron-core's own (as --attention-backend local)"
        ]
    return []


def transformer_config(
    model: ModelConfig, parallel: ParallelConfig, precision: PrecisionConfig, init_method_std: float = 0.02
) -> TransformerConfig:
    check_buildable(model, parallel, precision)
    dtype = precision.params_dtype
    kwargs = dict(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=model.num_query_groups,
        kv_channels=model.kv_channels,
        layernorm_epsilon=model.norm_epsilon,
        normalization=model.normalization,
        layernorm_zero_centered_gamma=model.apply_layernorm_1p,
        # Megatron-LM: --swiglu is a gated SiLU MLP; without it a plain GeLU MLP
        gated_linear_unit=model.swiglu,
        activation_func=torch.nn.functional.silu if model.swiglu else torch.nn.functional.gelu,
        add_bias_linear=model.add_bias_linear,
        hidden_dropout=model.hidden_dropout,
        attention_dropout=model.attention_dropout,
        attention_backend=AttnBackend[precision.attention_backend],
        cross_entropy_loss_fusion=precision.cross_entropy_loss_fusion,
        deterministic_mode=precision.deterministic_mode,
        context_parallel_size=parallel.context_parallel_size,
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
    if parallel.context_parallel_size > 1:  # Megatron-LM's --cp-comm-type: one type for all layers, or one a layer
        kinds = parallel.cp_comm_type
        kwargs.update(cp_comm_type=kinds[0] if len(kinds) == 1 else list(kinds))
    if precision.recompute_granularity == "full":
        kwargs.update(recompute_method=precision.recompute_method, recompute_num_layers=precision.recompute_num_layers)
    if precision.fp8_format:
        kwargs.update(
            fp8=precision.fp8_format,
            fp8_recipe="delayed",
            fp8_amax_history_len=precision.fp8_amax_history_len,
            fp8_amax_compute_algo=precision.fp8_amax_compute_algo,
            fp8_param=precision.fp8_param_gather,
        )
    return TransformerConfig(**kwargs)


def layer_spec(impl: str, model: Optional[ModelConfig] = None, attention_backend: str = "auto"):
    """The layer spec: Transformer Engine's (attention through megatron-core's own with --attention-backend local),
    else megatron-core's local one, whose torch norms get our ZeroCenteredNorm for --apply-layernorm-1p."""
    normalization = model.normalization if model else "RMSNorm"
    if impl == "transformer_engine":
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        if attention_backend == "local":
            from megatron.core.transformer.dot_product_attention import DotProductAttention

            spec = get_gpt_layer_with_transformer_engine_spec()
            spec.submodules.self_attention.submodules.core_attention = DotProductAttention
            return spec
        return get_gpt_layer_with_transformer_engine_spec()
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    spec = get_gpt_layer_local_spec(normalization=normalization)
    if model is not None and model.apply_layernorm_1p:
        # torch's norms have no zero-centered gamma (megatron-core's WrappedTorchNorm refuses it)
        spec.submodules.input_layernorm = ZeroCenteredNorm
        spec.submodules.pre_mlp_layernorm = ZeroCenteredNorm
    return spec


class ZeroCenteredNorm(torch.nn.Module):
    """LayerNorm or RMSNorm whose scale is stored as (gamma - 1), so weight decay pulls gamma towards 1
    (Megatron-LM's --apply-layernorm-1p; TE's and APEX's norms do this with zero_centered_gamma)."""

    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **_):
        super().__init__()
        self.rms = config.normalization == "RMSNorm"
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.zeros(hidden_size, dtype=config.params_dtype))
        self.bias = None if self.rms else torch.nn.Parameter(torch.zeros(hidden_size, dtype=config.params_dtype))
        for p in self.parameters():
            p.sequence_parallel = config.sequence_parallel  # megatron's grad all-reduce reads it

    def forward(self, x):
        scale = self.weight + 1
        if self.rms:
            return torch.nn.functional.rms_norm(x, x.shape[-1:], scale, self.eps)
        return torch.nn.functional.layer_norm(x, x.shape[-1:], scale, self.bias, self.eps)


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
    spec = layer_spec(transformer_impl(precision), model, precision.attention_backend)
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
                transformer_layer_spec=_with_final_norm(spec, config, vp_stage if vp > 1 else None),
                vocab_size=vocab_size,
                max_sequence_length=model.max_position_embeddings,
                pre_process=pre,
                post_process=post,
                share_embeddings_and_output_weights=not model.untie_embeddings_and_output_weights,
                position_embedding_type=model.position_embedding_type,
                rotary_percent=model.rotary_percent,
                rotary_base=_rotary_base(model.rotary_base),
                rope_scaling=model.use_rope_scaling,
                rope_scaling_factor=model.rope_scaling_factor,
                **extra,
            )
        )
    if torch.cuda.is_available():
        # As Megatron-LM's get_model: megatron-core allocates its own weights on the GPU, but modules built by torch
        # (the local spec's WrappedTorchNorm, our ZeroCenteredNorm) start on the CPU.
        for chunk in chunks:
            chunk.cuda(torch.cuda.current_device())
    return chunks, config


def _with_final_norm(spec, config: TransformerConfig, vp_stage: Optional[int]):
    """The layer spec, or for local layers with ZeroCenteredNorm a block spec whose final norm is one too (megatron-core
    would give the block its torch norm, which refuses a zero-centered gamma)."""
    if spec.submodules.input_layernorm is not ZeroCenteredNorm:
        return spec
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build

    return TransformerBlockSubmodules(
        layer_specs=[spec] * get_num_layers_to_build(config, vp_stage), layer_norm=ZeroCenteredNorm
    )


def _rotary_base(base: float):
    return int(base) if float(base).is_integer() else base  # megatron types it int; HF thetas may be any float
