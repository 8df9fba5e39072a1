"""Config → megatron-core GPTModel chunks with the right layer spec (TE when it imports, else local)."""

from __future__ import annotations

import importlib.util

import torch
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer import TransformerConfig

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


def transformer_config(args) -> TransformerConfig:
    te = transformer_engine_available()
    if args.fp8_format and not te:
        raise RuntimeError(TE_MISSING.format(what="--fp8-format"))
    if args.sequence_parallel and args.tensor_model_parallel_size > 1 and not te:
        raise RuntimeError(TE_MISSING.format(what="--sequence-parallel (it needs the TE or apex norm)"))
    if args.transformer_impl == "transformer_engine" and not te:
        raise RuntimeError(TE_MISSING.format(what="--transformer-impl transformer_engine"))
    args.transformer_impl = args.transformer_impl or ("transformer_engine" if te else "local")
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    kwargs = dict(
        num_layers=args.num_layers,
        hidden_size=args.hidden_size,
        ffn_hidden_size=args.ffn_hidden_size,
        num_attention_heads=args.num_attention_heads,
        num_query_groups=args.num_query_groups,
        kv_channels=args.kv_channels,
        layernorm_epsilon=args.norm_epsilon,
        normalization="RMSNorm",
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        add_bias_linear=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=args.init_method_std,
        tensor_model_parallel_size=args.tensor_model_parallel_size,
        pipeline_model_parallel_size=args.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=args.virtual_pipeline_model_parallel_size,
        sequence_parallel=args.sequence_parallel and args.tensor_model_parallel_size > 1,
        params_dtype=dtype,
        bf16=args.bf16,
        pipeline_dtype=dtype,
        use_cpu_initialization=not torch.cuda.is_available(),
        recompute_granularity=args.recompute_granularity,
    )
    if args.recompute_granularity == "full":
        kwargs.update(recompute_method=args.recompute_method, recompute_num_layers=args.recompute_num_layers)
    if args.fp8_format:
        kwargs.update(
            fp8=args.fp8_format,
            fp8_recipe="delayed",
            fp8_amax_history_len=args.fp8_amax_history_len,
            fp8_amax_compute_algo=args.fp8_amax_compute_algo,
        )
    return TransformerConfig(**kwargs)


def layer_spec(args):
    if args.transformer_impl == "transformer_engine":
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec()
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    return get_gpt_layer_local_spec(normalization="RMSNorm")


def build_model_chunks(args, config: TransformerConfig):
    """One GPTModel per virtual pipeline stage on this rank."""
    args.padded_vocab_size = padded_vocab_size(args)
    spec = layer_spec(args)
    vp = args.virtual_pipeline_model_parallel_size or 1
    chunks = []
    for vp_stage in range(vp):
        pre = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
        post = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
        extra = {"vp_stage": vp_stage} if vp > 1 else {}
        chunks.append(
            GPTModel(
                config=config,
                transformer_layer_spec=spec,
                vocab_size=args.padded_vocab_size,
                max_sequence_length=args.max_position_embeddings,
                pre_process=pre,
                post_process=post,
                share_embeddings_and_output_weights=not args.untie_embeddings_and_output_weights,
                position_embedding_type="rope",
                rotary_base=_rotary_base(args.rotary_base),
                rope_scaling=args.use_rope_scaling,
                rope_scaling_factor=args.rope_scaling_factor,
                **extra,
            )
        )
    return chunks


def _rotary_base(base: float):
    return int(base) if float(base).is_integer() else base  # megatron types it int; HF thetas may be any float


def pad_vocab(vocab_size: int, tp: int, divisible_by: int = 128) -> int:
    multiple = divisible_by * tp
    return ((vocab_size + multiple - 1) // multiple) * multiple


def padded_vocab_size(args) -> int:
    """Megatron's rule: the embedding has vocab_size rows rounded up to make_vocab_size_divisible_by x TP (the
    tokenizer never produces the extra rows). A checkpoint padded for another TP still loads: megatron-core lets
    the embedding and output layer differ in rows (the rows both have are loaded, the model's others are zero)."""
    return pad_vocab(args.vocab_size, args.tensor_model_parallel_size, args.make_vocab_size_divisible_by)
