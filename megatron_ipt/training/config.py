"""The training configuration: frozen dataclasses, one per concern, composed into `TrainingConfig`.

Every field is named after the argparse dest of its Megatron-LM flag (`--tensor-model-parallel-size` ->
`tensor_model_parallel_size`), so `from_args` reads a parsed command line field by field, and adding a flag is one
field in its dataclass (whose default is the flag's default) plus one `add_argument` line in that group's
`add_*_args`; a model field needs only the field, its override flag is declared from the dataclass. Values that depend
on the data-parallel size are computed once, by `TrainingConfig.resolve`, into a `ResolvedConfig`; nothing writes into
a config after it is built.
Model presets are data (`PRESETS`); `--model` also takes a model JSON file (e.g. the model.json that
tools/convert_checkpoint.py and tools/pretrain.py --save write), and the shape flags override either. Without
`--model` the shape flags alone describe the model, as in Megatron-LM (`ModelConfig.from_flags`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from megatron_ipt.tokenizers import NULL_TYPES, TokenizerSpec, add_tokenizer_args

# The blocks every preset builds (Llama/Mistral-style): what a Megatron-LM script says with --normalization RMSNorm
# --swiglu --disable-bias-linear --position-embedding-type rope --attention-dropout 0 --hidden-dropout 0.
MISTRAL_STYLE = dict(
    normalization="RMSNorm",
    swiglu=True,
    add_bias_linear=False,
    position_embedding_type="rope",
    attention_dropout=0.0,
    hidden_dropout=0.0,
)

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
        **MISTRAL_STYLE,
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
        **MISTRAL_STYLE,
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
        **MISTRAL_STYLE,
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
        **MISTRAL_STYLE,
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
        **MISTRAL_STYLE,
    ),
}
BUILT_POSITION_EMBEDDINGS = ("learned_absolute", "rope", "none")  # what models.build makes of --position-embedding-type
# A model file holds the model fields plus this key: the source Hugging Face config.json of a converted model, which
# the export back to HF starts from (so it keeps token ids, chat settings, ...).
HF_CONFIG_KEY = "hf_config"


def pad_vocab(vocab_size: int, tp: int, divisible_by: int = 128) -> int:
    """Megatron's rule: the embedding has vocab_size rows rounded up to a multiple of divisible_by x TP (the tokenizer
    never produces the extra rows). A checkpoint padded for another TP still loads: megatron-core lets the embedding
    and output layer differ in rows (the rows both have are loaded, the model's others are zero)."""
    multiple = divisible_by * tp
    return ((vocab_size + multiple - 1) // multiple) * multiple


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The model's shape: the fields of a model file, each also a flag that overrides the preset or file. Defaults are
    Megatron-LM's; a preset or model file must give the fields without one. The order of the fields is the order of
    a model file's keys."""

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    kv_channels: Optional[int] = None  # None: hidden_size / num_attention_heads
    seq_length: int
    max_position_embeddings: int
    rotary_base: float = 10000
    use_rope_scaling: bool = False
    rope_scaling_factor: float = 8.0
    norm_epsilon: float = 1e-5
    vocab_size: int
    make_vocab_size_divisible_by: int = 128
    untie_embeddings_and_output_weights: bool = False
    # -- issue 12: the architecture flags of Megatron-LM, with its defaults (a LayerNorm/GeLU/learned-position GPT
    # with biases and dropout 0.1); the presets set MISTRAL_STYLE. A model file written before these fields existed
    # was always MISTRAL_STYLE, so `_read_model_file` fills them in from there.
    normalization: str = field(default="LayerNorm", metadata={"choices": ("LayerNorm", "RMSNorm")})
    apply_layernorm_1p: bool = False  # zero-centered gamma: the norm scales by (1 + weight)
    swiglu: bool = False
    add_bias_linear: bool = field(default=True, metadata={"flag": "--disable-bias-linear", "const": False})
    position_embedding_type: str = field(
        default="learned_absolute",
        metadata={"choices": ("learned_absolute", "rope", "yarn", "mrope", "relative", "none")},  # Megatron-LM's
    )
    rotary_percent: float = 1.0
    attention_dropout: float = 0.1
    hidden_dropout: float = 0.1
    # Not model fields: the `--model` this came from (a preset name or a model file), and the source Hugging Face
    # config.json a model file carries (converted models).
    source: str = field(default="", compare=False)
    hf_config: Optional[dict] = None

    def __post_init__(self):
        if self.position_embedding_type not in BUILT_POSITION_EMBEDDINGS:
            from megatron_ipt.training.megatron_flags import refuse

            refuse(
                "--position-embedding-type",
                f"{self.position_embedding_type} is not built here; use one of {', '.join(BUILT_POSITION_EMBEDDINGS)} "
                "(rope with --use-rope-scaling for Llama 3.1-style long context)",
            )

    @classmethod
    def load(cls, model: str, **overrides) -> "ModelConfig":
        """A preset name or a model JSON file, with `overrides` (model fields; None keeps the loaded value)."""
        if model in PRESETS:
            values = dict(PRESETS[model])
        elif model.endswith(".json") or os.path.isfile(model):
            values = _read_model_file(model)
        else:
            raise SystemExit(
                f"--model {model!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a model JSON file"
            )
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(source=model, **values)

    @classmethod
    def from_args(cls, args, default_model: Optional[str] = None) -> "ModelConfig":
        """The flags of `add_model_args`: `--model` (else `default_model`) overridden by the shape flags given; with
        neither, the shape flags alone (`from_flags`; the vocabulary size defaults to the tokenizer's)."""
        flags = {name: getattr(args, name) for name in MODEL_FIELDS}
        if getattr(args, "tokenizer_type", None) in NULL_TYPES:
            # Megatron-LM's --vocab-size is NullTokenizer's (the ids before its EOD); the model's vocabulary is the
            # tokenizer's, one more (then padded), as Megatron-LM sizes it from every tokenizer
            flags["vocab_size"] = TokenizerSpec.from_args(args).build().vocab_size
        model = args.model or default_model
        if model:
            return cls.load(model, **flags)
        return cls.from_flags(flags, tokenizer_vocab_size=lambda: _tokenizer_vocab_size(args))

    # -- a model from flags alone (Megatron-LM's way) ------------------------------------------------------------
    @classmethod
    def from_flags(cls, flags: dict, tokenizer_vocab_size=None) -> "ModelConfig":
        """A model described by its flags alone, with Megatron-LM's defaults for the optional ones
        (megatron/training/arguments.py, `validate_args`): ffn_hidden_size from hidden_size as Megatron computes it
        (4h, or the SwiGLU rule with --swiglu), num_query_groups = num_attention_heads (no GQA), kv_channels = hidden_size /
        heads (kept None: megatron-core derives it). Where we differ: max_position_embeddings defaults to seq_length
        (Megatron-LM requires it; with RoPE it sizes nothing), and vocab_size to the tokenizer's
        (`tokenizer_vocab_size()`), as Megatron takes it from the tokenizer. Missing required flags are one error
        naming them all."""
        values = {name: value for name, value in flags.items() if value is not None}
        missing = [name for name in FLAGS_REQUIRED_WITHOUT_MODEL if name not in values]
        if "vocab_size" not in values:
            vocab_size = tokenizer_vocab_size() if tokenizer_vocab_size else None
            if vocab_size is None:
                missing.append("vocab_size")
            else:
                values["vocab_size"] = vocab_size
        if missing:
            raise SystemExit(
                "no --model, and the model flags do not describe a model: missing "
                + ", ".join("--" + name.replace("_", "-") for name in missing).replace(
                    "--vocab-size", "--vocab-size (or a --tokenizer-model to take it from)"
                )
                + f" (give them, or --model with a preset ({', '.join(sorted(PRESETS))}) or a model JSON file)"
            )
        values.setdefault(
            "ffn_hidden_size", megatron_ffn_hidden_size(values["hidden_size"], swiglu=values.get("swiglu", False))
        )
        values.setdefault("num_query_groups", values["num_attention_heads"])
        values.setdefault("max_position_embeddings", values["seq_length"])
        return cls(source="flags", **values)

    def model_fields(self) -> dict:
        return {name: getattr(self, name) for name in MODEL_FIELDS}

    def to_json(self) -> dict:
        """The model as a model file's contents (what `--model file.json` reads back)."""
        fields = self.model_fields()
        return fields if self.hf_config is None else {**fields, HF_CONFIG_KEY: self.hf_config}

    def padded_vocab_size(self, tensor_model_parallel_size: int) -> int:
        return pad_vocab(self.vocab_size, tensor_model_parallel_size, self.make_vocab_size_divisible_by)


MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("source", HF_CONFIG_KEY))
REQUIRED_MODEL_FIELDS = tuple(
    f.name for f in dataclasses.fields(ModelConfig) if f.name in MODEL_FIELDS and f.default is dataclasses.MISSING
)
OPTIONAL_MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.default is None)
# Without --model: what Megatron-LM requires (num_layers, hidden_size, num_attention_heads, seq_length); vocab_size
# comes from the tokenizer when not given.
FLAGS_REQUIRED_WITHOUT_MODEL = ("num_layers", "hidden_size", "num_attention_heads", "seq_length")


def megatron_ffn_hidden_size(hidden_size: int, swiglu: bool) -> int:
    """Megatron-LM's default --ffn-hidden-size: 4 x hidden, or with SwiGLU two thirds of that (its two input
    matrices keep the parameter count), rounded down to a multiple of 64."""
    return int(4 * hidden_size * 2 / 3 / 64) * 64 if swiglu else 4 * hidden_size


def _tokenizer_vocab_size(args) -> Optional[int]:
    """The vocabulary size of the tokenizer the flags name, or None without one."""
    spec = TokenizerSpec.from_args(args)
    if spec is None:
        return None
    try:
        return spec.build().vocab_size
    except (OSError, ValueError, RuntimeError) as error:
        raise SystemExit(f"--vocab-size not given and --tokenizer-model {spec.model} cannot be read: {error}") from None


def _plain_type(hint) -> type:
    """int for int and Optional[int]."""
    return next((arg for arg in typing.get_args(hint) if arg is not type(None)), hint)


MODEL_FIELD_TYPES = {name: _plain_type(hint) for name, hint in typing.get_type_hints(ModelConfig).items()}


def _read_model_file(path: str) -> dict:
    """A model JSON file -> its model fields and source HF config (checked: known names, required fields present,
    right types; integral floats are accepted for int fields and ints for float fields)."""
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
    values = {**MISTRAL_STYLE, **data}  # files from before the architecture fields: what every model then was
    for name, value in data.items():
        if name == HF_CONFIG_KEY:
            continue
        kind = MODEL_FIELD_TYPES[name]
        if value is None and name in OPTIONAL_MODEL_FIELDS:
            continue
        if kind is str:
            if not isinstance(value, str):
                raise SystemExit(f"--model {path}: field {name!r} is {value!r}, expected a string")
            continue
        if isinstance(value, bool) == (kind is bool) and (
            kind is bool or isinstance(value, (int, float)) and (kind is float or float(value).is_integer())
        ):
            values[name] = kind(value)
        else:
            raise SystemExit(f"--model {path}: field {name!r} is {value!r}, expected {kind.__name__}")
    return values


class _FromArgs:
    """A config group whose every field is the argparse dest of its flag."""

    @classmethod
    def from_args(cls, args):
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True, kw_only=True)
class ParallelConfig(_FromArgs):
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    num_layers_per_virtual_pipeline_stage: Optional[int] = None
    sequence_parallel: bool = False
    use_distributed_optimizer: bool = False
    overlap_grad_reduce: bool = False
    overlap_param_gather: bool = False
    distributed_backend: Optional[str] = None  # None: nccl with CUDA, else gloo
    # -- issue 12: Megatron-LM flags
    context_parallel_size: int = 1
    distributed_timeout_minutes: int = 10
    grad_reduce_in_bf16: bool = False  # with --bf16: reduce gradients in bf16, not fp32

    def virtual_pipeline_model_parallel_size(self, num_layers: int) -> Optional[int]:
        """Model chunks per pipeline stage (interleaved schedule), as Megatron-LM derives it; None without
        --num-layers-per-virtual-pipeline-stage."""
        if not self.num_layers_per_virtual_pipeline_stage:
            return None
        return num_layers // self.pipeline_model_parallel_size // self.num_layers_per_virtual_pipeline_stage


@dataclass(frozen=True, kw_only=True)
class PrecisionConfig(_FromArgs):
    """Number formats, the transformer implementation, and activation recomputation."""

    bf16: bool = False
    fp8_format: Optional[str] = None
    fp8_amax_history_len: int = 1  # Megatron-LM's defaults (TE's own DelayedScaling defaults are 1024 / max)
    fp8_amax_compute_algo: str = "most_recent"
    transformer_impl: Optional[str] = None  # None: transformer_engine when it imports, else local
    recompute_granularity: Optional[str] = None
    recompute_method: str = "uniform"
    recompute_num_layers: int = 1
    # -- fp16 and loss scaling (Megatron-LM's flags and defaults; issue 12) --
    fp16: bool = False
    loss_scale: Optional[float] = None  # a static loss scale; None: dynamic (fp16), none (bf16)
    initial_loss_scale: float = 2.0**32
    min_loss_scale: float = 1.0
    loss_scale_window: float = 1000
    hysteresis: int = 2
    # -- issue 12: Megatron-LM flags
    attention_backend: str = "auto"  # megatron-core's AttnBackend: which Transformer Engine attention kernel
    fp8_param_gather: bool = False
    cross_entropy_loss_fusion: bool = False
    deterministic_mode: bool = False

    def __post_init__(self):
        if self.fp8_format and not self.bf16:
            raise SystemExit("--fp8-format needs --bf16 (FP8 runs inside a BF16 model)")
        if self.fp16 and self.bf16:
            raise SystemExit("--fp16 and --bf16 exclude each other: pick one")
        if self.loss_scale is not None and not (self.fp16 or self.bf16):
            raise SystemExit(f"--loss-scale {self.loss_scale} needs --fp16 or --bf16 (fp32 runs scale no loss)")
        if self.loss_scale is not None and self.loss_scale <= 0:
            raise SystemExit(f"--loss-scale must be positive, got {self.loss_scale}")
        if self.fp8_param_gather and not self.fp8_format:
            raise SystemExit("--fp8-param-gather needs --fp8-format (it keeps the parameters in FP8)")
        if self.deterministic_mode and (self.attention_backend == "flash" or self.cross_entropy_loss_fusion):
            raise SystemExit(
                "--deterministic-mode cannot run flash attention or --cross-entropy-loss-fusion (not deterministic)"
            )

    @property
    def params_dtype(self):
        """The dtype of the model's parameters (and of activations between pipeline stages)."""
        import torch

        return torch.bfloat16 if self.bf16 else torch.float16 if self.fp16 else torch.float32


@dataclass(frozen=True, kw_only=True)
class InitConfig(_FromArgs):
    seed: int = 1234
    init_method_std: float = 0.02


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig(_FromArgs):
    """Batch, training length, AdamW and the learning-rate schedule."""

    micro_batch_size: int
    global_batch_size: Optional[int] = None  # None: micro batch x data-parallel size
    train_iters: Optional[int] = None  # exactly one of train_iters and train_samples
    train_samples: Optional[int] = None
    lr: float = 3e-4
    min_lr: float = 0.0
    lr_warmup_iters: int = 0
    lr_decay_iters: Optional[int] = None  # None: train_iters
    lr_decay_style: str = "linear"  # Megatron-LM's default
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    override_opt_param_scheduler: bool = False
    use_checkpoint_opt_param_scheduler: bool = False
    # -- issue 12: Megatron-LM flags
    lr_warmup_samples: int = 0
    lr_decay_samples: Optional[int] = None  # None: train_samples
    lr_warmup_fraction: Optional[float] = None  # of the decay steps; instead of --lr-warmup-iters/-samples
    decoupled_lr: Optional[float] = None  # for the embedding and output layer
    decoupled_min_lr: Optional[float] = None
    calculate_per_token_loss: bool = False

    def __post_init__(self):
        if (self.train_iters is None) == (self.train_samples is None):
            raise SystemExit("give exactly one of --train-iters or --train-samples")
        # Megatron-LM's rule: the schedule is counted in the unit of the training length
        if self.train_iters is not None and (self.lr_warmup_samples or self.lr_decay_samples is not None):
            raise SystemExit("--lr-warmup-samples/--lr-decay-samples go with --train-samples, not --train-iters")
        if self.train_samples is not None and (self.lr_warmup_iters or self.lr_decay_iters is not None):
            raise SystemExit("--lr-warmup-iters/--lr-decay-iters go with --train-iters, not --train-samples")
        if self.lr_warmup_fraction is not None and (self.lr_warmup_iters or self.lr_warmup_samples):
            raise SystemExit("give one of --lr-warmup-fraction and --lr-warmup-iters/--lr-warmup-samples")

    def schedule_steps(self, global_batch_size: int, train_iters: int) -> Dict[str, float]:
        """The scheduler's warmup and decay lengths in samples, as Megatron-LM's get_optimizer_param_scheduler counts
        them, and the weight-decay increment length."""
        if self.train_iters is not None:
            decay = (self.lr_decay_iters or train_iters) * global_batch_size
            warmup = self.lr_warmup_iters * global_batch_size
        else:
            decay = self.lr_decay_samples or self.train_samples
            warmup = self.lr_warmup_samples
        if self.lr_warmup_fraction is not None:
            warmup = self.lr_warmup_fraction * decay
        # Megatron-LM counts the weight-decay increment over the training length; weight decay is constant here, so
        # the value changes nothing but the scheduler's resume check: the decay length keeps a run that extends
        # --train-iters (with --lr-decay-iters fixed) resumable, as before.
        return {"lr_warmup_steps": warmup, "lr_decay_steps": decay, "wd_incr_steps": decay}


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    data_path: Optional[Tuple[str, ...]] = None  # a prefix, or a weighted blend: weight1 prefix1 weight2 prefix2 ...
    split: str = "969,30,1"
    data_cache_path: Optional[str] = None
    eod_mask_loss: bool = False
    mock_data: bool = False  # synthetic tokens (megatron-core's MockGPTDataset) instead of --data-path
    tokenizer: Optional[TokenizerSpec] = None
    # -- issue 12: Megatron-LM flags
    data_args_path: Optional[str] = None  # a file holding --data-path's words (for blends too long for a command)
    mmap_bin_files: bool = True
    create_attention_mask_in_dataloader: bool = True
    num_dataset_builder_threads: int = 1
    # -- issue 14: synthesizer tuning (training/tuning_data.py): each document of --data-path is one packed sequence,
    # its loss mask read from the parallel P_loss_mask_document beside each P_text_document
    loss_mask_data: bool = False

    @classmethod
    def from_args(cls, args) -> "DataConfig":
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name != "tokenizer"}
        if values["data_args_path"] is not None:
            values["data_path"] = _read_data_args(values["data_args_path"], values["data_path"])
        if values["data_path"] is not None:
            values["data_path"] = tuple(values["data_path"])
        return cls(tokenizer=TokenizerSpec.from_args(args), **values)


def _read_data_args(path: str, data_path) -> list:
    """--data-args-path: the file's whitespace-separated words are --data-path's (Megatron-LM's format)."""
    if data_path is not None:
        raise SystemExit("give one of --data-path and --data-args-path")
    try:
        with open(path, encoding="utf-8") as f:
            words = f.read().split()
    except OSError as error:
        raise SystemExit(f"--data-args-path {path}: {error.strerror}") from None
    if not words:
        raise SystemExit(f"--data-args-path {path}: the file is empty (expected 'prefix' or 'w1 prefix1 w2 prefix2')")
    return words


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig(_FromArgs):
    save: Optional[str] = None
    load: Optional[str] = None
    save_interval: Optional[int] = None
    keep_last: int = 0  # 0: keep every checkpoint, as Megatron-LM does
    no_load_optim: bool = False
    no_load_rng: bool = False
    distrib_optim_fully_reshardable_mem_efficient: bool = False
    # -- early exit, saving first (Megatron-LM's flags; issue 12) --
    exit_signal_handler: bool = False  # on SIGTERM: finish the step, save, exit 0
    exit_duration_in_mins: Optional[int] = None  # exit once training has run this long
    exit_interval: Optional[int] = None  # exit after the iteration divisible by this
    # -- issue 12: Megatron-LM flags
    use_checkpoint_args: bool = False  # the model comes from --load's model.json


@dataclass(frozen=True, kw_only=True)
class LoggingConfig(_FromArgs):
    """Validation, console and TensorBoard logging, and what the loop does on a non-finite step."""

    eval_interval: Optional[int] = None
    eval_iters: int = 100  # Megatron-LM's default
    log_interval: int = 100
    tensorboard_dir: Optional[str] = None
    peak_tflops: float = 989.0
    skip_nonfinite_steps: bool = False
    # -- issue 12: Megatron-LM flags
    tensorboard_log_interval: int = 1
    log_params_norm: bool = False
    log_num_zeros_in_grad: bool = False
    wandb_project: str = ""  # empty: no W&B
    wandb_exp_name: str = ""
    wandb_save_dir: str = ""
    logging_level: Optional[int] = None
    profile: bool = False  # a PyTorch profiler trace of steps [profile_step_start, profile_step_end)
    profile_step_start: int = 10
    profile_step_end: int = 12
    profile_ranks: Tuple[int, ...] = (0,)
    manual_gc: bool = False
    manual_gc_interval: int = 0
    empty_unused_memory_level: int = 0

    def __post_init__(self):
        object.__setattr__(self, "profile_ranks", tuple(self.profile_ranks))  # nargs='+' parses to a list
        if self.profile and self.profile_step_end <= self.profile_step_start:
            raise SystemExit(
                f"--profile-step-end {self.profile_step_end} must be after --profile-step-start "
                f"{self.profile_step_start}"
            )
        if self.profile and not self.tensorboard_dir:
            raise SystemExit("--profile writes its trace into --tensorboard-dir: give one")
        if self.wandb_project:
            from megatron_ipt.training.callbacks import wandb

            wandb.check(self)


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """Everything tools/pretrain.py's flags say, one group per concern."""

    model: ModelConfig
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    init: InitConfig = field(default_factory=InitConfig)
    optimizer: OptimizerConfig
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # issue 12: 'flag: reason' for each Megatron-LM no-op flag given (megatron_flags.NOOPS), printed at start-up
    ignored_flags: Tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_args(cls, args) -> "TrainingConfig":
        """The config `build_parser()`'s parsed flags describe."""
        from megatron_ipt.training import megatron_flags

        args = _megatron_lm_args(args)
        return cls(
            model=ModelConfig.from_args(args),
            parallel=ParallelConfig.from_args(args),
            precision=PrecisionConfig.from_args(args),
            init=InitConfig.from_args(args),
            optimizer=OptimizerConfig.from_args(args),
            data=DataConfig.from_args(args),
            checkpoint=CheckpointConfig.from_args(args),
            logging=LoggingConfig.from_args(args),
            ignored_flags=tuple(megatron_flags.given_noops(args)),
        )

    def resolve(self, data_parallel_size: int) -> "ResolvedConfig":
        """The values Megatron-LM derives once the data-parallel size is known; checks that the global batch splits
        into micro batches evenly across the data-parallel ranks."""
        o = self.optimizer
        per_step = o.micro_batch_size * data_parallel_size
        global_batch_size = per_step if o.global_batch_size is None else o.global_batch_size
        if global_batch_size % per_step:
            raise SystemExit(
                f"--global-batch-size {global_batch_size} is not divisible by micro batch size "
                f"{o.micro_batch_size} x data-parallel size {data_parallel_size}"
            )
        train_iters = o.train_iters if o.train_iters is not None else o.train_samples // global_batch_size
        return ResolvedConfig(
            config=self,
            **o.schedule_steps(global_batch_size, train_iters),
            data_parallel_size=data_parallel_size,
            global_batch_size=global_batch_size,
            num_microbatches=global_batch_size // per_step,
            # Megatron-LM: floor(samples / global batch)
            train_iters=train_iters,
            padded_vocab_size=self.model.padded_vocab_size(self.parallel.tensor_model_parallel_size),
        )


@dataclass(frozen=True, kw_only=True)
class ResolvedConfig:
    """A TrainingConfig and the values derived from it at run time (`TrainingConfig.resolve`)."""

    config: TrainingConfig
    data_parallel_size: int
    global_batch_size: int
    num_microbatches: int  # per iteration, on each data-parallel rank
    train_iters: int
    padded_vocab_size: int
    # the LR scheduler's lengths, in samples (OptimizerConfig.schedule_steps)
    lr_warmup_steps: float
    lr_decay_steps: float
    wd_incr_steps: float


# -- the command line: Megatron-LM's flag names, one `add_*_args` per config group ------------------------------------


def add_model_args(parser) -> None:
    """`--model` and one override flag per model field (`--num-layers`, ...)."""
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help=f"a preset ({', '.join(sorted(PRESETS))}) or a model JSON file (e.g. the model.json that "
        "tools/convert_checkpoint.py writes): its fields are the defaults of the flags below. Without it the flags "
        "alone describe the model, as in Megatron-LM: --num-layers, --hidden-size, --num-attention-heads and "
        "--seq-length are required, the rest default as Megatron-LM computes them (--vocab-size: the tokenizer's)",
    )
    metadata = {f.name: f.metadata for f in dataclasses.fields(ModelConfig)}
    for name in MODEL_FIELDS:
        kind, meta = MODEL_FIELD_TYPES[name], metadata[name]
        flag = meta.get("flag", "--" + name.replace("_", "-"))
        if kind is bool:
            g.add_argument(flag, dest=name, action="store_const", const=meta.get("const", True), default=None)
        else:
            g.add_argument(flag, dest=name, type=kind, choices=meta.get("choices"), default=None)


def _defaults(group) -> dict:
    """The dataclass's defaults as the parser's: a flag's default is written once, on its field."""
    return {f.name: f.default for f in dataclasses.fields(group) if f.default is not dataclasses.MISSING}


def add_parallel_args(parser) -> None:
    g = parser.add_argument_group("parallelism")
    g.add_argument("--tensor-model-parallel-size", type=int)
    g.add_argument("--pipeline-model-parallel-size", type=int)
    g.add_argument("--num-layers-per-virtual-pipeline-stage", type=int)
    g.add_argument("--sequence-parallel", action="store_true")
    g.add_argument("--use-distributed-optimizer", action="store_true")
    g.add_argument("--overlap-grad-reduce", action="store_true")
    g.add_argument("--overlap-param-gather", action="store_true")
    g.add_argument("--distributed-backend", choices=["nccl", "gloo"], help="default: nccl with CUDA, else gloo")
    parser.set_defaults(**_defaults(ParallelConfig))


def add_precision_args(parser) -> None:
    g = parser.add_argument_group("precision and recomputation")
    g.add_argument("--bf16", action="store_true")
    g.add_argument("--fp8-format", choices=["e4m3", "hybrid"])
    g.add_argument("--fp8-amax-history-len", type=int)
    g.add_argument("--fp8-amax-compute-algo", choices=["most_recent", "max"])
    g.add_argument(
        "--transformer-impl",
        choices=["transformer_engine", "local"],
        help="default: transformer_engine when it imports, else local",
    )
    g.add_argument("--recompute-granularity", choices=["full", "selective"])
    g.add_argument("--recompute-method", choices=["uniform", "block"])
    g.add_argument("--recompute-num-layers", type=int)
    # -- fp16 and loss scaling (issue 12) --
    g.add_argument("--fp16", action="store_true", help="fp16 parameters with loss scaling (see --loss-scale)")
    g.add_argument(
        "--loss-scale",
        type=float,
        help="static loss scale (fp16 or bf16); without it fp16 scales dynamically and bf16 does not scale",
    )
    g.add_argument("--initial-loss-scale", type=float, help="dynamic loss scaling: the scale it starts at")
    g.add_argument("--min-loss-scale", type=float, help="dynamic loss scaling: the smallest scale")
    g.add_argument(
        "--loss-scale-window", type=float, help="dynamic loss scaling: steps without overflow before the scale doubles"
    )
    g.add_argument(
        "--hysteresis", type=int, help="dynamic loss scaling: overflowing steps before the scale first halves"
    )
    parser.set_defaults(**_defaults(PrecisionConfig))


def add_init_args(parser) -> None:
    g = parser.add_argument_group("initialization")
    g.add_argument("--seed", type=int)
    g.add_argument("--init-method-std", type=float)
    parser.set_defaults(**_defaults(InitConfig))


def add_optimizer_args(parser) -> None:
    g = parser.add_argument_group("batch, schedule and optimizer")
    g.add_argument("--micro-batch-size", type=int, required=True)
    g.add_argument("--global-batch-size", type=int)
    g.add_argument("--train-iters", type=int)
    g.add_argument("--train-samples", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--min-lr", type=float)
    g.add_argument("--lr-warmup-iters", type=int)
    g.add_argument("--lr-decay-iters", type=int)
    g.add_argument("--lr-decay-style", choices=["constant", "linear", "cosine", "inverse-square-root", "WSD"])
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--adam-beta1", type=float)
    g.add_argument("--adam-beta2", type=float)
    g.add_argument("--adam-eps", type=float)
    g.add_argument("--clip-grad", type=float)
    g.add_argument(
        "--override-opt_param-scheduler",
        action="store_true",
        help="on --load, take the LR schedule from these flags, not from the checkpoint",
    )
    g.add_argument(
        "--use-checkpoint-opt_param-scheduler",
        action="store_true",
        help="on --load, take the LR schedule from the checkpoint even where these flags differ",
    )
    parser.set_defaults(**_defaults(OptimizerConfig))


def add_data_args(parser) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--data-path", nargs="+", help="prefix, or weighted blend 'w1 prefix1 w2 prefix2'")
    g.add_argument("--split")
    g.add_argument("--data-cache-path")
    g.add_argument("--eod-mask-loss", action="store_true")
    g.add_argument(
        "--mock-data",
        action="store_true",
        help="train on synthetic tokens (megatron-core's MockGPTDataset) without --data-path, e.g. to measure step "
        "time; the tokenizer is optional (without one, --vocab-size or the preset's gives the ids)",
    )
    # -- issue 14: synthesizer tuning (docs/tuning.md) --
    g.add_argument(
        "--loss-mask-data",
        action="store_true",
        help="tuning data (tools/build_tuning_data.py): each document of a --data-path prefix P_text_document is one "
        "sample, padded to --seq-length (never concatenated with the next), and only the targets marked 1 in the "
        "parallel P_loss_mask_document carry loss; the loss and its token count are over those tokens only. Not "
        "Megatron-LM's --sft (JSONL conversations)",
    )
    parser.set_defaults(**{name: value for name, value in _defaults(DataConfig).items() if name != "tokenizer"})
    add_tokenizer_args(parser, required=False, default_type="SentencePieceTokenizer", null_tokenizer=True)


def add_checkpoint_args(parser) -> None:
    g = parser.add_argument_group("checkpoints")
    g.add_argument("--save")
    g.add_argument("--load")
    g.add_argument("--save-interval", type=int)
    g.add_argument(
        "--keep-last",
        type=int,
        help="checkpoints kept in --save, older ones deleted (default 0: keep all, as Megatron)",
    )
    g.add_argument("--no-load-optim", action="store_true")
    g.add_argument("--no-load-rng", action="store_true")
    g.add_argument(
        "--distrib-optim-fully-reshardable-mem-efficient",
        action="store_true",
        help="distributed optimizer saves: gather each shard's state on DP rank 0 over gloo, not on every DP rank",
    )
    # -- early exit, saving first (issue 12) --
    g.add_argument(
        "--exit-signal-handler",
        action="store_true",
        help="on SIGTERM (what Slurm sends before the time limit): finish the step, save to --save, exit 0",
    )
    g.add_argument(
        "--exit-duration-in-mins", type=int, help="exit (saving first) once training has run this many minutes"
    )
    g.add_argument("--exit-interval", type=int, help="exit (saving first) after the iteration divisible by this")
    parser.set_defaults(**_defaults(CheckpointConfig))


def add_logging_args(parser) -> None:
    g = parser.add_argument_group("evaluation and logging")
    g.add_argument("--eval-interval", type=int)
    g.add_argument("--eval-iters", type=int)
    g.add_argument("--log-interval", type=int)
    g.add_argument("--tensorboard-dir")
    g.add_argument("--peak-tflops", type=float, help="per-GPU peak for MFU (H100 dense BF16: 989)")
    g.add_argument(
        "--skip-nonfinite-steps",
        "--skip-nonfinite-loss",
        dest="skip_nonfinite_steps",
        action="store_true",
        help="skip (count, log) a step whose loss or grad norm is NaN/inf instead of exiting before its update",
    )
    parser.set_defaults(**_defaults(LoggingConfig))


def build_parser():
    """tools/pretrain.py's flags; `TrainingConfig.from_args` reads what they parse to."""
    import argparse

    parser = argparse.ArgumentParser(description="Pre-train a GPT model with megatron-core (Megatron-LM flag names).")
    for add in (
        add_model_args,
        add_parallel_args,
        add_optimizer_args,
        add_init_args,
        add_precision_args,
        add_data_args,
        add_checkpoint_args,
        add_logging_args,
        add_megatron_lm_args,
    ):
        add(parser)
    return parser


# -- issue 12: the rest of Megatron-LM's flags. Implemented ones are declared into their concern's group (their fields
# and defaults are in the dataclasses above); megatron_flags declares the no-ops and the refused ones. -----------------


def _group(parser, title: str):
    return next(g for g in parser._action_groups if g.title == title)


def add_megatron_lm_args(parser) -> None:
    from megatron_ipt.training import megatron_flags

    g = _group(parser, "model")
    g.add_argument(
        "--group-query-attention",
        action="store_true",
        help="as in Megatron-LM, needed for --num-query-groups to take effect on a model given by flags alone; "
        "presets and model files state their query groups",
    )
    g = _group(parser, "parallelism")
    g.add_argument(
        "--context-parallel-size", type=int, help="split each sequence over this many GPUs (needs Transformer Engine)"
    )
    g.add_argument("--distributed-timeout-minutes", type=int, help="timeout of torch.distributed's collectives")
    g.add_argument("--grad-reduce-in-bf16", action="store_true", help="with --bf16: reduce gradients in bf16, not fp32")
    g = _group(parser, "precision and recomputation")
    g.add_argument(
        "--attention-backend",
        choices=["auto", "flash", "fused", "unfused", "local"],
        help="megatron-core's AttnBackend: which Transformer Engine attention kernel (auto: TE's choice); local: "
        "megatron-core's own attention. Without TE attention is megatron-core's own (flash/fused/unfused are then "
        "reported as no-ops)",
    )
    g.add_argument(
        "--use-flash-attn",
        dest="attention_backend",
        action="store_const",
        const="flash",
        help="Megatron-LM's older spelling of --attention-backend flash",
    )
    g.add_argument("--fp8-param-gather", action="store_true", help="keep parameters in FP8 and all-gather them in FP8")
    g.add_argument(
        "--cross-entropy-loss-fusion", action="store_true", help="megatron-core's fused vocab-parallel cross entropy"
    )
    g.add_argument(
        "--deterministic-mode", action="store_true", help="deterministic kernels (torch.use_deterministic_algorithms)"
    )
    g = _group(parser, "batch, schedule and optimizer")
    g.add_argument("--lr-warmup-samples", type=int, help="with --train-samples")
    g.add_argument("--lr-decay-samples", type=int, help="with --train-samples (default: --train-samples)")
    g.add_argument("--lr-warmup-fraction", type=float, help="warmup as a fraction of the decay length")
    g.add_argument("--decoupled-lr", type=float, help="learning rate of the input embedding and output layer")
    g.add_argument("--decoupled-min-lr", type=float, help="minimum learning rate of the embedding and output layer")
    g.add_argument(
        "--calculate-per-token-loss",
        action="store_true",
        help="scale the loss by the loss tokens of the whole global batch, not per micro batch",
    )
    g = _group(parser, "data")
    g.add_argument("--data-args-path", help="a file holding --data-path's words (prefix, or 'w1 prefix1 w2 prefix2')")
    g.add_argument("--no-mmap-bin-files", dest="mmap_bin_files", action="store_false", help="read .bin files, no mmap")
    g.add_argument(
        "--no-create-attention-mask-in-dataloader",
        dest="create_attention_mask_in_dataloader",
        action="store_false",
        help="no explicit attention mask per sample: the attention kernel applies the causal mask",
    )
    g.add_argument("--num-dataset-builder-threads", type=int)
    g = _group(parser, "checkpoints")
    g.add_argument(
        "--use-checkpoint-args",
        action="store_true",
        help="take the model from --load's model.json (shape flags that disagree with it are an error)",
    )
    g = _group(parser, "evaluation and logging")
    g.add_argument("--tensorboard-log-interval", type=int, help="write TensorBoard scalars every N iterations")
    g.add_argument("--log-params-norm", action="store_true", help="log the parameters' L2 norm ('params-norm')")
    g.add_argument("--log-num-zeros-in-grad", action="store_true", help="log the zeros in the gradient ('num-zeros')")
    g.add_argument("--wandb-project", help="log to Weights & Biases too (pip install wandb; WANDB_MODE=offline works)")
    g.add_argument("--wandb-exp-name")
    g.add_argument("--wandb-save-dir", help="default: <--save>/wandb")
    g.add_argument("--logging-level", type=int, help="Python logging level (e.g. 20 INFO, 30 WARNING)")
    g.add_argument("--profile", action="store_true", help="write a PyTorch profiler trace into --tensorboard-dir")
    g.add_argument("--profile-step-start", type=int, help="first profiled iteration")
    g.add_argument("--profile-step-end", type=int, help="the iteration profiling stops before")
    g.add_argument("--profile-ranks", type=int, nargs="+", help="global ranks that profile")
    g.add_argument("--manual-gc", action="store_true", help="disable Python's automatic GC; collect at fixed steps")
    g.add_argument("--manual-gc-interval", type=int, help="with --manual-gc: collect every N iterations (0: never)")
    g.add_argument(
        "--empty-unused-memory-level",
        type=int,
        choices=[0, 1, 2],
        help="empty the CUDA cache each iteration: 0 never, 1 after the step, 2 also after forward-backward",
    )
    megatron_flags.add_args(parser)


def _megatron_lm_args(args):
    """The parsed flags with Megatron-LM's rules applied before the config is built: refused flags stop here,
    --use-checkpoint-args points --model at --load's model.json, and --num-query-groups on a model given by flags
    alone needs --group-query-attention (Megatron-LM would ignore it and build multi-head attention)."""
    from megatron_ipt.training import megatron_flags

    megatron_flags.check(args)
    args = argparse_copy(args)
    if getattr(args, "use_checkpoint_args", False):
        if not args.load:
            megatron_flags.refuse("--use-checkpoint-args", "needs --load (the model comes from its model.json)")
        path = os.path.join(args.load, "model.json")
        if not os.path.isfile(path):
            megatron_flags.refuse("--use-checkpoint-args", f"{path} does not exist (written by --save runs)")
        saved = ModelConfig.load(path)
        for name in MODEL_FIELDS:
            given = getattr(args, name)
            if given is not None and given != getattr(saved, name):
                megatron_flags.refuse(
                    "--use-checkpoint-args",
                    f"--{name.replace('_', '-')} {given} differs from the checkpoint's {getattr(saved, name)}",
                )
        args.model = path
    if (
        getattr(args, "model", None) is None
        and getattr(args, "num_query_groups", None) is not None
        and not getattr(args, "group_query_attention", False)
        and args.num_query_groups != getattr(args, "num_attention_heads", None)
    ):
        megatron_flags.refuse(
            "--num-query-groups",
            "without --group-query-attention Megatron-LM ignores it and builds multi-head attention; "
            "add --group-query-attention",
        )
    return args


def argparse_copy(args):
    import argparse

    return argparse.Namespace(**vars(args))
