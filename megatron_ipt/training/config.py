"""Training configuration: model presets as data, and the Megatron-named CLI flags that override them."""

from __future__ import annotations

import argparse
from typing import Dict, List, Optional

# Model presets. InstructLM shapes are our choice (the paper gives only parameter counts): Mistral-style blocks
# (RMSNorm, SwiGLU, RoPE theta 10000, Mistral 32k vocab, untied embeddings). Every preset unties the output layer
# (Megatron's default is tied; `--untie-embeddings-and-output-weights` as in Megatron-LM).
PRESETS: Dict[str, dict] = {
    "tiny": dict(
        num_layers=2,
        hidden_size=64,
        ffn_hidden_size=176,
        num_attention_heads=4,
        num_query_groups=2,
        seq_length=64,
        max_position_embeddings=64,
        rotary_base=10000,
        vocab_size=32000,
        untie_embeddings_and_output_weights=True,
    ),
    "instructlm-500m": dict(
        num_layers=24,
        hidden_size=1280,
        ffn_hidden_size=3456,
        num_attention_heads=20,
        num_query_groups=20,
        seq_length=2048,
        max_position_embeddings=2048,
        rotary_base=10000,
        vocab_size=32000,
        untie_embeddings_and_output_weights=True,
    ),
    "instructlm-1.3b": dict(
        num_layers=24,
        hidden_size=2048,
        ffn_hidden_size=5632,
        num_attention_heads=16,
        num_query_groups=16,
        seq_length=2048,
        max_position_embeddings=2048,
        rotary_base=10000,
        vocab_size=32000,
        untie_embeddings_and_output_weights=True,
    ),
    "llama3-8b": dict(
        num_layers=32,
        hidden_size=4096,
        ffn_hidden_size=14336,
        num_attention_heads=32,
        num_query_groups=8,
        seq_length=8192,
        max_position_embeddings=8192,
        rotary_base=500000,
        vocab_size=128256,
        untie_embeddings_and_output_weights=True,
    ),
    "mistral-7b": dict(
        num_layers=32,
        hidden_size=4096,
        ffn_hidden_size=14336,
        num_attention_heads=32,
        num_query_groups=8,
        seq_length=4096,
        max_position_embeddings=32768,
        rotary_base=10000,
        vocab_size=32000,
        untie_embeddings_and_output_weights=True,
    ),
}
# Every model-shape field, its type, and its value when neither the preset/model file nor a flag sets it (Megatron-LM's
# defaults; kv_channels None = hidden_size / num_attention_heads). A model file must give the fields without a default.
MODEL_FIELD_TYPES = {
    "num_layers": int,
    "hidden_size": int,
    "ffn_hidden_size": int,
    "num_attention_heads": int,
    "num_query_groups": int,
    "kv_channels": int,
    "seq_length": int,
    "max_position_embeddings": int,
    "rotary_base": float,
    "use_rope_scaling": bool,
    "rope_scaling_factor": float,
    "norm_epsilon": float,
    "vocab_size": int,
    "make_vocab_size_divisible_by": int,
    "untie_embeddings_and_output_weights": bool,
}
MODEL_DEFAULTS = dict(
    kv_channels=None,
    use_rope_scaling=False,
    rope_scaling_factor=8.0,
    norm_epsilon=1e-5,
    make_vocab_size_divisible_by=128,
    untie_embeddings_and_output_weights=False,
)
MODEL_FIELDS = list(MODEL_FIELD_TYPES)
REQUIRED_MODEL_FIELDS = [f for f in MODEL_FIELDS if f not in MODEL_DEFAULTS]
# A model file (`--model path.json`, written by tools/convert_checkpoint.py next to a converted checkpoint) holds
# model fields plus this key: the source Hugging Face config.json, which the export back to HF starts from.
HF_CONFIG_KEY = "hf_config"


def load_model_file(path: str) -> dict:
    """A model JSON file -> its model fields (checked: known names, required fields present, right types)."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as error:
        raise SystemExit(f"--model {path}: cannot read a JSON model file: {error}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"--model {path}: expected a JSON object of model fields")
    unknown = sorted(set(data) - set(MODEL_FIELDS) - {HF_CONFIG_KEY})
    missing = [f for f in REQUIRED_MODEL_FIELDS if f not in data]
    if unknown or missing:
        raise SystemExit(
            f"--model {path}: unknown fields {unknown}, missing fields {missing} "
            f"(model fields: {', '.join(MODEL_FIELDS)})"
        )
    fields = {name: value for name, value in data.items() if name != HF_CONFIG_KEY}
    for name, value in fields.items():
        kind = MODEL_FIELD_TYPES[name]
        if (
            value is None
            and name in MODEL_DEFAULTS
            or isinstance(value, bool) == (kind is bool)
            and (kind is bool or isinstance(value, (int, float)) and (kind is float or float(value).is_integer()))
        ):
            fields[name] = value if value is None else kind(value)
        else:
            raise SystemExit(f"--model {path}: field {name!r} is {value!r}, expected {kind.__name__}")
    return fields


def model_fields(model: str) -> dict:
    """Every model field of a preset name or a model JSON file, defaults filled in."""
    import os

    if model in PRESETS:
        preset = PRESETS[model]
    elif model.endswith(".json") or os.path.isfile(model):
        preset = load_model_file(model)
    else:
        raise SystemExit(f"--model {model!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a model JSON file")
    return {**MODEL_DEFAULTS, **preset}


def model_description(args) -> dict:
    """The model this run trains, as a model file's contents: every field as resolved from --model and the flags, plus
    the source Hugging Face config when --model is a file that carries one (so an export keeps its token ids etc.)."""
    import json
    import os

    description = {field: getattr(args, field) for field in MODEL_FIELDS}
    if args.model not in PRESETS and os.path.isfile(args.model):
        with open(args.model, encoding="utf-8") as f:
            hf_config = json.load(f).get(HF_CONFIG_KEY)
        if hf_config is not None:
            description[HF_CONFIG_KEY] = hf_config
    return description


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Pre-train a GPT model with megatron-core (Megatron-LM flag names).")
    a = p.add_argument
    a(
        "--model",
        default="tiny",
        help=f"a preset ({', '.join(sorted(PRESETS))}) or a model JSON file (e.g. the "
        "model.json that tools/convert_checkpoint.py writes); any field can be overridden below",
    )
    for field, kind in MODEL_FIELD_TYPES.items():
        if kind is bool:
            a("--" + field.replace("_", "-"), action="store_true", default=None)
        else:
            a("--" + field.replace("_", "-"), type=kind, default=None)
    # parallelism
    a("--tensor-model-parallel-size", type=int, default=1)
    a("--pipeline-model-parallel-size", type=int, default=1)
    a("--num-layers-per-virtual-pipeline-stage", type=int, default=None)
    a("--sequence-parallel", action="store_true")
    a("--use-distributed-optimizer", action="store_true")
    a("--overlap-grad-reduce", action="store_true")
    a("--overlap-param-gather", action="store_true")
    a("--distributed-backend", choices=["nccl", "gloo"], default=None)
    # batch and schedule
    a("--micro-batch-size", type=int, required=True)
    a("--global-batch-size", type=int, default=None)
    a("--train-iters", type=int, default=None)
    a("--train-samples", type=int, default=None)
    a("--lr", type=float, default=3e-4)
    a("--min-lr", type=float, default=0.0)
    a("--lr-warmup-iters", type=int, default=0)
    a("--lr-decay-iters", type=int, default=None)
    a("--lr-decay-style", choices=["constant", "linear", "cosine", "inverse-square-root", "WSD"], default="cosine")
    a("--weight-decay", type=float, default=0.01)
    a("--adam-beta1", type=float, default=0.9)
    a("--adam-beta2", type=float, default=0.999)
    a("--adam-eps", type=float, default=1e-8)
    a("--clip-grad", type=float, default=1.0)
    a("--init-method-std", type=float, default=0.02)
    a("--seed", type=int, default=1234)
    # precision
    a("--bf16", action="store_true")
    a("--fp8-format", choices=["e4m3", "hybrid"], default=None)
    a("--fp8-amax-history-len", type=int, default=1024)
    a("--fp8-amax-compute-algo", choices=["most_recent", "max"], default="max")
    a(
        "--transformer-impl",
        choices=["transformer_engine", "local"],
        default=None,
        help="default: transformer_engine when it imports, else local",
    )
    a("--recompute-granularity", choices=["full", "selective"], default=None)
    a("--recompute-method", choices=["uniform", "block"], default="uniform")
    a("--recompute-num-layers", type=int, default=1)
    # data
    a("--data-path", nargs="+", default=None, help="prefix, or weighted blend 'w1 prefix1 w2 prefix2'")
    a("--split", default="969,30,1")
    a("--data-cache-path", default=None)
    a("--tokenizer-type", default="SentencePieceTokenizer")
    a("--tokenizer-model", default=None)
    a("--eod-mask-loss", action="store_true")
    # checkpoints
    a("--save", default=None)
    a("--load", default=None)
    a("--save-interval", type=int, default=None)
    a("--keep-last", type=int, default=3, help="checkpoints kept in --save (older ones are deleted)")
    a("--no-load-optim", action="store_true")
    a("--no-load-rng", action="store_true")
    a(
        "--distrib-optim-fully-reshardable-mem-efficient",
        action="store_true",
        help="distributed optimizer saves: gather each shard's state on DP rank 0 over gloo, not on every DP rank",
    )
    a(
        "--override-opt_param-scheduler",
        action="store_true",
        help="on --load, take the LR schedule from these flags, not from the checkpoint",
    )
    a(
        "--use-checkpoint-opt_param-scheduler",
        action="store_true",
        help="on --load, take the LR schedule from the checkpoint even where these flags differ",
    )
    # evaluation and logging
    a("--eval-interval", type=int, default=None)
    a("--eval-iters", type=int, default=10)
    a("--log-interval", type=int, default=100)
    a("--tensorboard-dir", default=None)
    a("--peak-tflops", type=float, default=989.0, help="per-GPU peak for MFU (H100 dense BF16: 989)")
    a(
        "--skip-nonfinite-steps",
        "--skip-nonfinite-loss",
        dest="skip_nonfinite_steps",
        action="store_true",
        help="skip (count, log) a step whose loss or grad norm is NaN/inf instead of exiting before its update",
    )
    return p


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for field, value in model_fields(args.model).items():
        if getattr(args, field) is None:
            setattr(args, field, value)
    if (args.train_iters is None) == (args.train_samples is None):
        raise SystemExit("give exactly one of --train-iters or --train-samples")
    if args.fp8_format and not args.bf16:
        raise SystemExit("--fp8-format needs --bf16 (FP8 runs inside a BF16 model)")
    return args


def finalize_batch(args: argparse.Namespace, data_parallel_size: int) -> None:
    """Fill the global batch size and train iterations once the DP size is known; check divisibility."""
    if args.global_batch_size is None:
        args.global_batch_size = args.micro_batch_size * data_parallel_size
    if args.global_batch_size % (args.micro_batch_size * data_parallel_size):
        raise SystemExit(
            f"--global-batch-size {args.global_batch_size} is not divisible by micro batch size "
            f"{args.micro_batch_size} x data-parallel size {data_parallel_size}"
        )
    args.num_microbatches = args.global_batch_size // (args.micro_batch_size * data_parallel_size)
    if args.train_iters is None:
        args.train_iters = args.train_samples // args.global_batch_size
