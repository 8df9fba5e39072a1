"""The training configuration: frozen dataclasses, one per concern, composed into `TrainingConfig`.

Every field is a flag of tools/pretrain.py with Megatron-LM's name and default: the field is named after the flag's
argparse dest (`--tensor-model-parallel-size` -> `tensor_model_parallel_size`) and declares its help through
`flag(...)` (megatron_ipt/flags.py), and each concern is one argument group of --help. Adding a training flag is one
field in its concern's dataclass plus its use. The model is model_config.py's; the presets and Megatron-LM's flags
without a field of their own (no-ops, refused ones, and the rules applied before the config is built) are in
presets.py and megatron_flags.py. Values that depend on the data-parallel size are computed once, by
`TrainingConfig.resolve`, into a `ResolvedConfig`; nothing writes into a config after it is built.
"""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from megatron_ipt.flags import Alias, OneLineArgumentParser, add_flags, config_from_args, flag, in_help_order
from megatron_ipt.tokenizers import TokenizerSpec, add_tokenizer_args
from megatron_ipt.training import megatron_flags
from megatron_ipt.training.model_config import ModelConfig, add_model_args


class _FromArgs:
    """A config group whose flag fields are read back from the parsed flags."""

    @classmethod
    def from_args(cls, args):
        return config_from_args(cls, args)


@dataclass(frozen=True, kw_only=True)
class ParallelConfig(_FromArgs):
    """How the model and the data are split over the GPUs, and the collectives between them."""

    tensor_model_parallel_size: int = flag(1, help=None)
    pipeline_model_parallel_size: int = flag(1, help=None)
    num_layers_per_virtual_pipeline_stage: Optional[int] = flag(None, help=None)
    sequence_parallel: bool = flag(False, help=None)
    use_distributed_optimizer: bool = flag(False, help=None)
    overlap_grad_reduce: bool = flag(False, help=None)
    overlap_param_gather: bool = flag(False, help=None)
    distributed_backend: Optional[str] = flag(None, help="default: nccl with CUDA, else gloo", choices=["nccl", "gloo"])
    context_parallel_size: int = flag(1, help="split each sequence over this many GPUs (needs Transformer Engine)")
    distributed_timeout_minutes: int = flag(10, help="timeout of torch.distributed's collectives")
    grad_reduce_in_bf16: bool = flag(False, help="with --bf16: reduce gradients in bf16, not fp32")
    cp_comm_type: Tuple[str, ...] = flag(
        ("p2p",),
        help="context parallelism's communication: one for all layers, or one per layer",
        choices=["p2p", "a2a", "allgather", "a2a+p2p"],
    )

    def virtual_pipeline_model_parallel_size(self, num_layers: int) -> Optional[int]:
        """Model chunks per pipeline stage (interleaved schedule), as Megatron-LM derives it; None without
        --num-layers-per-virtual-pipeline-stage."""
        if not self.num_layers_per_virtual_pipeline_stage:
            return None
        return num_layers // self.pipeline_model_parallel_size // self.num_layers_per_virtual_pipeline_stage


@dataclass(frozen=True, kw_only=True)
class PrecisionConfig(_FromArgs):
    """Number formats and loss scaling, the transformer implementation and its kernels, activation recomputation."""

    bf16: bool = flag(False, help=None)
    fp8_format: Optional[str] = flag(None, help=None, choices=["e4m3", "hybrid"])
    # Megatron-LM's defaults (TE's own DelayedScaling defaults are 1024 / max)
    fp8_amax_history_len: int = flag(1, help=None)
    fp8_amax_compute_algo: str = flag("most_recent", help=None, choices=["most_recent", "max"])
    transformer_impl: Optional[str] = flag(
        None, help="default: transformer_engine when it imports, else local", choices=["transformer_engine", "local"]
    )
    recompute_granularity: Optional[str] = flag(None, help=None, choices=["full", "selective"])
    recompute_method: str = flag("uniform", help=None, choices=["uniform", "block"])
    recompute_num_layers: int = flag(1, help=None)
    fp16: bool = flag(False, help="fp16 parameters with loss scaling (see --loss-scale)")
    loss_scale: Optional[float] = flag(
        None, help="static loss scale (fp16 or bf16); without it fp16 scales dynamically and bf16 does not scale"
    )
    initial_loss_scale: float = flag(2.0**32, help="dynamic loss scaling: the scale it starts at")
    min_loss_scale: float = flag(1.0, help="dynamic loss scaling: the smallest scale")
    loss_scale_window: float = flag(1000, help="dynamic loss scaling: steps without overflow before the scale doubles")
    hysteresis: int = flag(2, help="dynamic loss scaling: overflowing steps before the scale first halves")
    attention_backend: str = flag(
        "auto",
        help="megatron-core's AttnBackend: which Transformer Engine attention kernel (auto: TE's choice); local: "
        "megatron-core's own attention. Without TE attention is megatron-core's own (flash/fused/unfused are then "
        "reported as no-ops)",
        choices=["auto", "flash", "fused", "unfused", "local"],
        aliases=[Alias("--use-flash-attn", "flash", help="Megatron-LM's older spelling of --attention-backend flash")],
    )
    fp8_param_gather: bool = flag(False, help="keep parameters in FP8 and all-gather them in FP8")
    cross_entropy_loss_fusion: bool = flag(False, help="megatron-core's fused vocab-parallel cross entropy")
    deterministic_mode: bool = flag(False, help="deterministic kernels (torch.use_deterministic_algorithms)")

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
    seed: int = flag(1234, help=None)
    init_method_std: float = flag(0.02, help=None)


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig(_FromArgs):
    """Batch, training length, AdamW and the learning-rate schedule."""

    micro_batch_size: int = flag(help=None, required=True)
    global_batch_size: Optional[int] = flag(None, help=None)  # None: micro batch x data-parallel size
    train_iters: Optional[int] = flag(None, help=None)  # exactly one of train_iters and train_samples
    train_samples: Optional[int] = flag(None, help=None)
    lr: float = flag(3e-4, help=None)
    min_lr: float = flag(0.0, help=None)
    lr_warmup_iters: int = flag(0, help=None)
    lr_decay_iters: Optional[int] = flag(None, help=None)  # None: train_iters
    lr_decay_style: str = flag(  # Megatron-LM's default
        "linear", help=None, choices=["constant", "linear", "cosine", "inverse-square-root", "WSD"]
    )
    weight_decay: float = flag(0.01, help=None)
    adam_beta1: float = flag(0.9, help=None)
    adam_beta2: float = flag(0.999, help=None)
    adam_eps: float = flag(1e-8, help=None)
    clip_grad: float = flag(1.0, help=None)
    override_opt_param_scheduler: bool = flag(
        False,
        help="on --load, take the LR schedule from these flags, not from the checkpoint",
        flags=["--override-opt_param-scheduler"],
    )
    use_checkpoint_opt_param_scheduler: bool = flag(
        False,
        help="on --load, take the LR schedule from the checkpoint even where these flags differ",
        flags=["--use-checkpoint-opt_param-scheduler"],
    )
    lr_warmup_samples: int = flag(0, help="with --train-samples")
    lr_decay_samples: Optional[int] = flag(None, help="with --train-samples (default: --train-samples)")
    lr_warmup_fraction: Optional[float] = flag(None, help="warmup as a fraction of the decay length")
    decoupled_lr: Optional[float] = flag(None, help="learning rate of the input embedding and output layer")
    decoupled_min_lr: Optional[float] = flag(None, help="minimum learning rate of the embedding and output layer")
    calculate_per_token_loss: bool = flag(
        False, help="scale the loss by the loss tokens of the whole global batch, not per micro batch"
    )

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
    """The datasets and their tokenizer."""

    data_path: Optional[Tuple[str, ...]] = flag(None, help="prefix, or weighted blend 'w1 prefix1 w2 prefix2'")
    split: str = flag("969,30,1", help=None)
    data_cache_path: Optional[str] = flag(None, help=None)
    eod_mask_loss: bool = flag(False, help=None)
    mock_data: bool = flag(
        False,
        help="train on synthetic tokens (megatron-core's MockGPTDataset) without --data-path, e.g. to measure step "
        "time; the tokenizer is optional (without one, --vocab-size or the preset's gives the ids)",
    )
    tokenizer: Optional[TokenizerSpec] = None  # from the flags of `add_tokenizer_args`
    # Synthesizer tuning (training/loss_mask_data.py, docs/tuning.md)
    loss_mask_data: bool = flag(
        False,
        help="tuning data (tools/build_tuning_data.py): each document of a --data-path prefix P_text_document is one "
        "sample, padded to --seq-length (never concatenated with the next), and only the targets marked 1 in the "
        "parallel P_loss_mask_document carry loss; the loss and its token count are over those tokens only. Not "
        "Megatron-LM's --sft (JSONL conversations)",
    )
    data_args_path: Optional[str] = flag(  # for blends too long for a command line
        None, help="a file holding --data-path's words (prefix, or 'w1 prefix1 w2 prefix2')"
    )
    mmap_bin_files: bool = flag(True, help="read .bin files, no mmap", flags=["--no-mmap-bin-files"])
    create_attention_mask_in_dataloader: bool = flag(
        True,
        help="no explicit attention mask per sample: the attention kernel applies the causal mask",
        flags=["--no-create-attention-mask-in-dataloader"],
    )
    num_dataset_builder_threads: int = flag(1, help=None)
    phase_transition_iterations: Tuple[int, ...] = flag(
        (),
        type=lambda value: _iteration_list("--phase-transition-iterations", value),
        metavar="K1,K2,...",
        help="iterations where a training phase ends (comma-separated, as Megatron-LM): the run saves to --save and "
        "exits there; the next job --load-s it, usually with another --data-path, and continues the same LR "
        "schedule and iteration count, its data from the new blend's first sample. Give the same list to every "
        "phase's job; the global batch size must stay the same",
    )

    @classmethod
    def from_args(cls, args) -> "DataConfig":
        data_path = args.data_path
        if args.data_args_path is not None:
            data_path = _read_data_args(args.data_args_path, data_path)
        return config_from_args(
            cls,
            args,
            data_path=None if data_path is None else tuple(data_path),
            tokenizer=TokenizerSpec.from_args(args),
        )


def _iteration_list(option: str, value: str) -> Tuple[int, ...]:
    """'K1,K2,...': positive iterations, sorted (Megatron-LM sorts them too)."""
    try:
        iterations = [int(word) for word in value.split(",")]
    except ValueError:
        iterations = []
    if not iterations or min(iterations) < 1 or len(set(iterations)) != len(iterations):
        megatron_flags.refuse(
            option, f"{value!r}: give distinct positive iterations separated by commas, e.g. 1000,5000"
        )
    return tuple(sorted(iterations))


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
    """Saving and loading, and the early exits (which save first)."""

    save: Optional[str] = flag(None, help=None)
    load: Optional[str] = flag(None, help=None)
    save_interval: Optional[int] = flag(None, help=None)
    keep_last: int = flag(0, help="checkpoints kept in --save, older ones deleted (default 0: keep all, as Megatron)")
    no_load_optim: bool = flag(False, help=None)
    no_load_rng: bool = flag(False, help=None)
    distrib_optim_fully_reshardable_mem_efficient: bool = flag(
        False,
        help="distributed optimizer saves: gather each shard's state on DP rank 0 over gloo, not on every DP rank",
    )
    exit_signal_handler: bool = flag(
        False, help="on SIGTERM (what Slurm sends before the time limit): finish the step, save to --save, exit 0"
    )
    exit_duration_in_mins: Optional[int] = flag(
        None, help="exit (saving first) once training has run this many minutes"
    )
    exit_interval: Optional[int] = flag(None, help="exit (saving first) after the iteration divisible by this")
    use_checkpoint_args: bool = flag(
        False, help="take the model from --load's model.json (shape flags that disagree with it are an error)"
    )
    exit_on_missing_checkpoint: bool = flag(
        False, help="with --load: a directory without a checkpoint is an error (exit status 1), not a fresh start"
    )


@dataclass(frozen=True, kw_only=True)
class LoggingConfig(_FromArgs):
    """Validation, console, TensorBoard and W&B logging, profiling, and what the loop does on a non-finite step."""

    eval_interval: Optional[int] = flag(None, help=None)
    eval_iters: int = flag(100, help=None)  # Megatron-LM's default
    log_interval: int = flag(100, help=None)
    tensorboard_dir: Optional[str] = flag(None, help=None)
    peak_tflops: float = flag(989.0, help="per-GPU peak for MFU (H100 dense BF16: 989)")
    skip_nonfinite_steps: bool = flag(
        False,
        help="skip (count, log) a step whose loss or grad norm is NaN/inf instead of exiting before its update",
        flags=["--skip-nonfinite-steps", "--skip-nonfinite-loss"],
    )
    tensorboard_log_interval: int = flag(1, help="write TensorBoard scalars every N iterations")
    log_progress: bool = flag(
        False,
        help="append Megatron-LM's progress.txt in --save: 'Starting job' at start, and after each checkpoint save "
        "the iteration, this job's and the cumulative TFLOP/s/GPU, the floating-point operations and tokens so far",
    )
    log_params_norm: bool = flag(False, help="log the parameters' L2 norm ('params-norm')")
    log_num_zeros_in_grad: bool = flag(False, help="log the zeros in the gradient ('num-zeros')")
    wandb_project: str = flag(  # empty: no W&B
        "", help="log to Weights & Biases too (pip install wandb; WANDB_MODE=offline works)"
    )
    wandb_exp_name: str = flag("", help=None)
    wandb_save_dir: str = flag("", help="default: <--save>/wandb")
    logging_level: Optional[int] = flag(None, help="Python logging level (e.g. 20 INFO, 30 WARNING)")
    profile: bool = flag(False, help="write a PyTorch profiler trace into --tensorboard-dir")
    profile_step_start: int = flag(10, help="first profiled iteration")
    profile_step_end: int = flag(12, help="the iteration profiling stops before")
    profile_ranks: Tuple[int, ...] = flag((0,), help="global ranks that profile")
    manual_gc: bool = flag(False, help="disable Python's automatic GC; collect at fixed steps")
    manual_gc_interval: int = flag(0, help="with --manual-gc: collect every N iterations (0: never)")
    empty_unused_memory_level: int = flag(
        0,
        help="empty the CUDA cache each iteration: 0 never, 1 after the step, 2 also after forward-backward",
        choices=[0, 1, 2],
    )

    def __post_init__(self):
        object.__setattr__(self, "profile_ranks", tuple(self.profile_ranks))  # nargs='+' parses to a list
        if self.profile and self.profile_step_end <= self.profile_step_start:
            raise SystemExit(
                f"--profile-step-end {self.profile_step_end} must be after --profile-step-start "
                f"{self.profile_step_start}"
            )
        if self.profile and not self.tensorboard_dir:
            raise SystemExit("--profile writes its trace into --tensorboard-dir: give one")
        if self.wandb_project and importlib.util.find_spec("wandb") is None:
            megatron_flags.refuse(
                "--wandb-project",
                "needs the wandb package (pip install wandb); WANDB_MODE=offline logs without a server",
            )


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
    # 'flag: reason' for each Megatron-LM no-op flag given (megatron_flags.NOOPS), printed at start-up
    ignored_flags: Tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self):
        if self.logging.log_progress and not self.checkpoint.save:
            # Megatron-LM silently writes nothing then
            megatron_flags.refuse("--log-progress", "it writes progress.txt in --save: give --save")

    @classmethod
    def from_args(cls, args) -> "TrainingConfig":
        """The config `build_parser()`'s parsed flags describe."""
        args = megatron_flags.apply_rules(args)
        model = ModelConfig.from_args(args)
        megatron_flags.check_model(args, model)
        return cls(
            model=model,
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
        late = [k for k in self.data.phase_transition_iterations if k >= train_iters]
        if late:
            megatron_flags.refuse(
                "--phase-transition-iterations",
                f"{late[0]} is not before the last iteration ({train_iters}): a phase ends before training does",
            )
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

    def phase(self, iteration: int) -> Tuple[int, int]:
        """(first, end) iterations of the training phase that `iteration` (the iterations done) starts or continues,
        as Megatron-LM counts them: a phase runs from a transition (or 0) to the next one (or --train-iters); at a
        transition the next phase begins. The whole run is one phase without --phase-transition-iterations."""
        transitions = self.config.data.phase_transition_iterations
        first = max((k for k in transitions if k <= iteration), default=0)
        end = min((k for k in transitions if k > iteration), default=self.train_iters)
        return first, end


# -- the command line: one argument group per config group ----------------------------------------------------------


def add_parallel_args(parser, exclude=()) -> None:
    add_flags(parser.add_argument_group("parallelism"), ParallelConfig, exclude)


def add_precision_args(parser, exclude=()) -> None:
    add_flags(parser.add_argument_group("precision and recomputation"), PrecisionConfig, exclude)


def build_parser() -> argparse.ArgumentParser:
    """tools/pretrain.py's flags; `TrainingConfig.from_args` reads what they parse to."""
    parser = OneLineArgumentParser(
        description="Pre-train a GPT model with megatron-core (Megatron-LM flag names).",
        allow_abbrev=False,  # as Megatron-LM: a misspelt flag is never taken for another one that it prefixes
    )
    add_model_args(parser)
    add_flags(parser, megatron_flags.ModelRules)
    add_parallel_args(parser)
    add_flags(parser.add_argument_group("batch, schedule and optimizer"), OptimizerConfig)
    add_flags(parser.add_argument_group("initialization"), InitConfig)
    add_precision_args(parser)
    add_flags(parser.add_argument_group("data"), DataConfig)
    add_tokenizer_args(parser, required=False, null_tokenizer=True)
    add_flags(parser.add_argument_group("checkpoints"), CheckpointConfig)
    add_flags(parser.add_argument_group("evaluation and logging"), LoggingConfig)
    megatron_flags.add_args(parser)
    return in_help_order(parser)
