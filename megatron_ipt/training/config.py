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

from megatron_ipt.data.tokenizer import TokenizerSpec, add_tokenizer_args

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
    # Not model fields: the `--model` this came from (a preset name or a model file), and the source Hugging Face
    # config.json a model file carries (converted models).
    source: str = field(default="", compare=False)
    hf_config: Optional[dict] = None

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
        model = args.model or default_model
        if model:
            return cls.load(model, **flags)
        return cls.from_flags(flags, tokenizer_vocab_size=lambda: _tokenizer_vocab_size(args))

    # -- a model from flags alone (Megatron-LM's way) ------------------------------------------------------------
    @classmethod
    def from_flags(cls, flags: dict, tokenizer_vocab_size=None) -> "ModelConfig":
        """A model described by its flags alone, with Megatron-LM's defaults for the optional ones
        (megatron/training/arguments.py, `validate_args`): ffn_hidden_size from hidden_size as Megatron computes it
        for SwiGLU blocks (ours are), num_query_groups = num_attention_heads (no GQA), kv_channels = hidden_size /
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
        values.setdefault("ffn_hidden_size", megatron_ffn_hidden_size(values["hidden_size"], swiglu=True))
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
    values = dict(data)
    for name, value in data.items():
        if name == HF_CONFIG_KEY:
            continue
        kind = MODEL_FIELD_TYPES[name]
        if value is None and name in OPTIONAL_MODEL_FIELDS:
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

    def __post_init__(self):
        if self.fp8_format and not self.bf16:
            raise SystemExit("--fp8-format needs --bf16 (FP8 runs inside a BF16 model)")
        if self.fp16 and self.bf16:
            raise SystemExit("--fp16 and --bf16 exclude each other: pick one")
        if self.loss_scale is not None and not (self.fp16 or self.bf16):
            raise SystemExit(f"--loss-scale {self.loss_scale} needs --fp16 or --bf16 (fp32 runs scale no loss)")
        if self.loss_scale is not None and self.loss_scale <= 0:
            raise SystemExit(f"--loss-scale must be positive, got {self.loss_scale}")

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

    def __post_init__(self):
        if (self.train_iters is None) == (self.train_samples is None):
            raise SystemExit("give exactly one of --train-iters or --train-samples")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    data_path: Optional[Tuple[str, ...]] = None  # a prefix, or a weighted blend: weight1 prefix1 weight2 prefix2 ...
    split: str = "969,30,1"
    data_cache_path: Optional[str] = None
    eod_mask_loss: bool = False
    mock_data: bool = False  # synthetic tokens (megatron-core's MockGPTDataset) instead of --data-path
    tokenizer: Optional[TokenizerSpec] = None

    @classmethod
    def from_args(cls, args) -> "DataConfig":
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name != "tokenizer"}
        if values["data_path"] is not None:
            values["data_path"] = tuple(values["data_path"])
        return cls(tokenizer=TokenizerSpec.from_args(args), **values)


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


@dataclass(frozen=True, kw_only=True)
class LoggingConfig(_FromArgs):
    """Validation, console and TensorBoard logging, and what the loop does on a non-finite step."""

    eval_interval: Optional[int] = None
    eval_iters: int = 100  # Megatron-LM's default
    log_interval: int = 100
    tensorboard_dir: Optional[str] = None
    peak_tflops: float = 989.0
    skip_nonfinite_steps: bool = False


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

    @classmethod
    def from_args(cls, args) -> "TrainingConfig":
        """The config `build_parser()`'s parsed flags describe."""
        return cls(
            model=ModelConfig.from_args(args),
            parallel=ParallelConfig.from_args(args),
            precision=PrecisionConfig.from_args(args),
            init=InitConfig.from_args(args),
            optimizer=OptimizerConfig.from_args(args),
            data=DataConfig.from_args(args),
            checkpoint=CheckpointConfig.from_args(args),
            logging=LoggingConfig.from_args(args),
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
        return ResolvedConfig(
            config=self,
            data_parallel_size=data_parallel_size,
            global_batch_size=global_batch_size,
            num_microbatches=global_batch_size // per_step,
            # Megatron-LM: floor(samples / global batch)
            train_iters=o.train_iters if o.train_iters is not None else o.train_samples // global_batch_size,
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
    for name in MODEL_FIELDS:
        kind = MODEL_FIELD_TYPES[name]
        if kind is bool:
            g.add_argument("--" + name.replace("_", "-"), action="store_true", default=None)
        else:
            g.add_argument("--" + name.replace("_", "-"), type=kind, default=None)


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
    parser.set_defaults(**{name: value for name, value in _defaults(DataConfig).items() if name != "tokenizer"})
    add_tokenizer_args(parser, required=False, default_type="SentencePieceTokenizer")


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
    ):
        add(parser)
    return parser
