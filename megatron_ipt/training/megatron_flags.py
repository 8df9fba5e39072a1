"""Megatron-LM flags that tools/pretrain.py accepts without a config field of its own: two tables, checked in one place,
and the Megatron-LM rules applied to the parsed flags before the config is built (`apply_rules`).

A Megatron-LM launch script must never die on an argparse "unrecognized arguments" error. Every flag of Megatron's
dense GPT/Llama/Mistral scripts and training docs (tests/training/megatron_lm_flags.tsv lists them, with where each
comes from) is therefore known here, in one of three ways:
- implemented: a field of a config group in config.py or model_config.py, named after the flag's dest, with
  Megatron's default;
- `NOOPS`: accepted, and named in one start-up line, where the flag only tunes a kernel, a data loader or a log
  that we do not have or always have (its reason says which);
- `REFUSED`: accepted by the parser so that giving it stops the run with a one-line reason naming what to use
  instead (exit status 2), never a generic argparse error. A flag with `allowed` values is refused only for the
  others (e.g. `--ckpt-format torch_dist` is what we write; `--ckpt-format torch` is refused).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import List, Tuple

from megatron_ipt import flags
from megatron_ipt.training.model_config import MODEL_FIELDS, ModelConfig


@dataclass(frozen=True)
class Flag:
    option: str
    reason: str
    kwargs: dict = field(default_factory=lambda: {"action": "store_const", "const": True})
    allowed: Tuple = ()  # REFUSED only: values that are accepted

    @property
    def dest(self) -> str:
        return self.option[2:].replace("-", "_")


FSDP_ONLY = "read only with --use-megatron-fsdp, which is refused here"
# Megatron-FSDP's own settings (examples/megatron_fsdp/train_llama3_8b_fsdp_h100_fp8.sh, docs' megatron_fsdp.md)
_FSDP_SWITCHES = (
    "--fsdp-double-buffer",
    "--fsdp-manual-registration",
    "--fsdp-db-use-persist-buf-on-alloc-fail",
    "--megatron-fsdp-max-pool-double-buffer",
)
_FSDP_SETTINGS = (
    "--outer-dp-sharding-strategy",
    "--megatron-fsdp-main-params-dtype",
    "--megatron-fsdp-main-grads-dtype",
    "--megatron-fsdp-grad-comm-dtype",
    "--suggested-communication-unit-size",
)

NOOPS: Tuple[Flag, ...] = (
    Flag("--use-mcore-models", "Megatron-LM ignores it too: megatron-core models are the only ones"),
    Flag("--log-throughput", "throughput (TFLOP/s/GPU, tokens/s/GPU, MFU) is always logged"),
    Flag("--use-pytorch-profiler", "--profile always uses the PyTorch profiler"),
    Flag(
        "--no-gradient-accumulation-fusion",
        "gradient accumulation is never fused into the weight-gradient GEMM here (that needs APEX/TE fused wgrad "
        "kernels); gradients accumulate in megatron DDP's grad buffers",
    ),
    Flag(
        "--tp-comm-overlap",
        "overlapping TP communication with GEMMs needs Transformer Engine userbuffers, which are not set up; "
        "TP communication runs unoverlapped",
    ),
    Flag(
        "--no-check-for-nan-in-loss-and-grad",
        "the non-finite check of loss and grad norm always runs (it stops the run, or skips the step with "
        "--skip-nonfinite-steps); it costs one scalar per step",
    ),
    Flag(
        "--log-timers-to-tensorboard",
        "the step time is always written (TensorBoard 'iteration-time'); per-phase timers are not kept",
    ),
    Flag(
        "--num-workers",
        "batches are read in the training process from the memory-mapped dataset; there is no DataLoader to give "
        "workers",
        {"type": int},
    ),
    Flag(
        "--data-parallel-sharding-strategy",
        FSDP_ONLY,
        {"choices": ["no_shard", "optim", "optim_grads", "optim_grads_params"]},
    ),
    *(Flag(option, FSDP_ONLY) for option in _FSDP_SWITCHES),
    *(Flag(option, FSDP_ONLY, {"type": str}) for option in _FSDP_SETTINGS),
    Flag(
        "--use-nccl-ub",
        "NCCL user-buffer registration of the data-parallel communication buffers is not set up; the collectives "
        "run from ordinary allocations",
    ),
    Flag("--disable-symmetric-registration", "read only with --use-nccl-ub, which is a no-op here"),
    Flag(
        "--moe-grouped-gemm",
        "read only by mixture-of-experts layers (--num-experts), which are refused here",
    ),
    Flag(
        "--attention-softmax-in-fp32",
        "megatron-core's own attention already runs its softmax in fp32 here (megatron-core's default, which "
        "Megatron-LM turns off unless this flag is given); Transformer Engine's kernels keep their own precision",
    ),
    Flag(
        "--no-masked-softmax-fusion",
        "the fused scale-mask-softmax kernel is never used here (megatron-core's default); attention's softmax is "
        "megatron-core's unfused one or Transformer Engine's",
    ),
    Flag(
        "--cuda-graph-impl",
        "CUDA graphs are never captured here; kernels are launched one by one each step",
        {"choices": ["none", "local", "transformer_engine", "full_iteration"]},
    ),
    Flag(
        "--dataloader-fast-cache-load",
        "dataset start-up here always checks the index cache against its .bin/.idx files (rebuilding a stale one) "
        "before megatron-core opens it; the fast path that skips those checks is not taken",
    ),
    Flag(
        "--dataloader-defer-npy-index-mmap",
        "megatron-core maps the index cache's .npy files when the datasets are built; deferring it is not wired",
    ),
    Flag(
        "--per-dataset-sequences-path",
        "each dataset's sequence count is read from its .idx at start-up; a precomputed count file is not read",
        {"type": str},
    ),
    Flag(
        "--dist-ckpt-optim-fully-reshardable",
        "the distributed optimizer is always saved fully reshardable here (any TP/PP/DP at load)",
    ),
    Flag("--async-strategy", "read only with --async-save, which is refused here", {"choices": ["nvrx", "mcore"]}),
    Flag(
        "--record-memory-history",
        "CUDA memory history is not recorded here (--profile writes a PyTorch profiler trace)",
    ),
    Flag("--memory-snapshot-path", "read only with --record-memory-history, a no-op here", {"type": str}),
    Flag("--otel-enabled", "no OpenTelemetry traces or metrics are exported here (TensorBoard and W&B are)"),
    Flag("--otel-service-name", "read only with --otel-enabled, a no-op here", {"type": str}),
    Flag("--otel-span-groups", "read only with --otel-enabled, a no-op here", {"type": str}),
)

REFUSED: Tuple[Flag, ...] = (
    Flag(
        "--ckpt-format",
        "checkpoints are saved and loaded in megatron-core's torch_dist format only (Megatron-LM's default); "
        "pass --ckpt-format torch_dist or leave it out",
        {"choices": ["torch", "torch_dist", "zarr", "torch_dcp", "fsdp_dtensor"]},
        allowed=("torch_dist",),
    ),
    Flag(
        "--async-save",
        "saves are synchronous here (written, renamed and committed by a marker before training goes on); "
        "drop the flag",
    ),
    Flag(
        "--use-megatron-fsdp",
        "megatron-core's FSDP is not wired into this loop and its checkpoints; shard the optimizer state with "
        "--use-distributed-optimizer (with --overlap-grad-reduce --overlap-param-gather)",
    ),
    Flag(
        "--init-model-with-meta-device",
        "Megatron-LM uses it only with --use-megatron-fsdp, which is refused here; drop the flag",
    ),
    Flag(
        "--step-batch-size-schedule",
        "the global batch size is fixed for a run here; set --global-batch-size",
        {"type": str},
    ),
    Flag(
        "--rampup-batch-size",
        "the global batch size is fixed for a run here; set --global-batch-size",
        {"nargs": "*"},
    ),
    Flag(
        "--num-experts",
        "mixture-of-experts models are not built here (dense GPT/Llama/Mistral only); drop the flag",
        {"type": int},
    ),
    Flag(
        "--expert-model-parallel-size",
        "mixture-of-experts models are not built here, so there are no experts to split; leave it at 1",
        {"type": int},
        allowed=(1,),
    ),
    Flag(
        "--num-distributed-optimizer-instances",
        "the distributed optimizer shards over the whole data-parallel group here (one instance); leave it at 1",
        {"type": int},
        allowed=(1,),
    ),
    Flag(
        "--use-precision-aware-optimizer",
        "Transformer Engine's precision-aware Adam is not wired; the optimizer's main weights and Adam moments stay "
        "fp32; drop the flag",
    ),
    Flag(
        "--exp-avg-dtype",
        "Adam's moments are kept in fp32 here (--use-precision-aware-optimizer is refused); pass fp32 or leave it out",
        {"choices": ["fp32", "fp16", "bf16", "fp8"]},
        allowed=("fp32",),
    ),
    Flag(
        "--exp-avg-sq-dtype",
        "Adam's moments are kept in fp32 here (--use-precision-aware-optimizer is refused); pass fp32 or leave it out",
        {"choices": ["fp32", "fp16", "bf16", "fp8"]},
        allowed=("fp32",),
    ),
    Flag(
        "--dump-param-to-param-group-map",
        "the parameter-to-group map (for converting Megatron-FSDP checkpoints) is not written; torch_dist "
        "checkpoints here need none; drop the flag",
        {"type": str},
    ),
    Flag(
        "--dist-ckpt-strictness",
        "checkpoints load with megatron-core's default key handling (assume_ok_unexpected, Megatron-LM's default); "
        "other modes are not wired: leave it out",
        {
            "choices": [
                "assume_ok_unexpected",
                "log_unexpected",
                "log_all",
                "raise_unexpected",
                "raise_all",
                "return_unexpected",
                "return_all",
                "ignore_all",
            ]
        },
        allowed=("assume_ok_unexpected",),
    ),
    Flag(
        "--finetune",
        "loading only a checkpoint's weights and restarting at iteration 0 is not wired; --load resumes the "
        "checkpoint (--no-load-optim and --no-load-rng start the optimizer and RNG afresh)",
    ),
    Flag(
        "--sft",
        "Megatron-LM's SFT dataset (chat JSONL) is not built here; pack tuning data with tools/build_tuning_data.py "
        "and train on it with --loss-mask-data",
    ),
    Flag("--fim-data", "fill-in-the-middle samples are not built here; drop the flag"),
    Flag(
        "--fp8-hybrid",
        "not a Megatron-LM flag (its training docs name it; its parser rejects it): use --fp8-format hybrid",
    ),
    Flag(
        "--per-split-data-args-path",
        "separate train/valid/test blends are not supported; give one blend with --data-path (or --data-args-path) "
        "and --split",
        {"type": str},
    ),
)


def add_args(parser) -> None:
    """Declare every flag of both tables on `parser`."""
    noops = parser.add_argument_group(
        "Megatron-LM flags accepted as no-ops",
        "accepted so Megatron-LM scripts run; each given one is named in a start-up line with its reason",
    )
    for flag in NOOPS:
        noops.add_argument(flag.option, dest=flag.dest, default=None, help="no-op: " + flag.reason, **flag.kwargs)
    refused = parser.add_argument_group(
        "Megatron-LM flags refused", "accepted so that giving one stops with its reason (exit status 2)"
    )
    for flag in REFUSED:
        allowed = f" (accepted: {', '.join(map(str, flag.allowed))})" if flag.allowed else ""
        refused.add_argument(
            flag.option, dest=flag.dest, default=None, help=f"refused{allowed}: {flag.reason}", **flag.kwargs
        )


def refuse(option: str, reason: str):
    """Stop with Megatron-style one-line error naming the flag and the reason (exit status 2, as argparse's)."""
    print(f"error: {option}: {reason}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def check(args) -> None:
    """Stop at the first refused flag given (with a value outside its `allowed`)."""
    for flag in REFUSED:
        value = getattr(args, flag.dest, None)
        if value is not None and value not in flag.allowed:
            refuse(flag.option, flag.reason)


def given_noops(args) -> List[str]:
    """'--flag: reason' for each no-op flag given."""
    return [f"{flag.option}: {flag.reason}" for flag in NOOPS if getattr(args, flag.dest, None) is not None]


@dataclass(frozen=True)
class ModelRules:
    """A flag that only checks Megatron-LM's rule on the model flags (`apply_rules`); not part of any config."""

    group_query_attention: bool = flags.flag(
        False,
        help="as in Megatron-LM, needed for --num-query-groups to take effect on a model given by flags alone; "
        "presets and model files state their query groups",
        group="model",
    )
    add_position_embedding: bool = flags.flag(
        True,
        help="Megatron-LM's older spelling beside --use-rotary-position-embeddings (RoPE has no learned position "
        "embedding); with other position types it is refused, as Megatron-LM refuses it",
        flags=("--no-position-embedding",),
        group="model",
    )


def check_model(args: argparse.Namespace, model: ModelConfig) -> None:
    """Megatron-LM's rule on the built model: --no-position-embedding is only its older spelling beside RoPE."""
    if not getattr(args, "add_position_embedding", True) and model.position_embedding_type != "rope":
        refuse(
            "--no-position-embedding",
            f"Megatron-LM accepts it only with rope positions (this model's are {model.position_embedding_type}); "
            "for a model without position embeddings use --position-embedding-type none",
        )


def apply_rules(args: argparse.Namespace) -> argparse.Namespace:
    """The parsed flags with Megatron-LM's rules applied before the config is built: refused flags stop here,
    --use-checkpoint-args points --model at --load's model.json, and --num-query-groups on a model given by flags
    alone needs --group-query-attention (Megatron-LM would ignore it and build multi-head attention)."""
    check(args)
    args = argparse.Namespace(**vars(args))
    if getattr(args, "use_checkpoint_args", False):
        if not args.load:
            refuse("--use-checkpoint-args", "needs --load (the model comes from its model.json)")
        path = os.path.join(args.load, "model.json")
        if not os.path.isfile(path):
            refuse("--use-checkpoint-args", f"{path} does not exist (written by --save runs)")
        saved = ModelConfig.load(path)
        for name in MODEL_FIELDS:
            given = getattr(args, name)
            if given is not None and given != getattr(saved, name):
                refuse(
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
        refuse(
            "--num-query-groups",
            "without --group-query-attention Megatron-LM ignores it and builds multi-head attention; "
            "add --group-query-attention",
        )
    return args


def markdown() -> str:
    """The no-op and refused tables as docs/training.md shows them (tests/training/test_megatron_flags.py checks the
    copy there is current; regenerate with `python -m megatron_ipt.training.megatron_flags`)."""
    lines = ["| no-op flag | why |", "| --- | --- |"]
    lines += [f"| `{f.option}` | {f.reason} |" for f in NOOPS]
    lines += ["", "| refused flag | why, and what to use instead |", "| --- | --- |"]
    for f in REFUSED:
        allowed = f" (`{' '.join(map(str, f.allowed))}` is accepted)" if f.allowed else ""
        lines.append(f"| `{f.option}`{allowed} | {f.reason} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
