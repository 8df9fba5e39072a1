"""Cross-cutting parts of the training loop, one file each: throughput (FLOP count, MFU, timing, memory),
tensorboard (Megatron-LM's scalar names), stability (non-finite loss and gradient norm), preemption (early exit on
SIGTERM, after a time, at an iteration or at a phase's end), progress (--log-progress's progress.txt), logger
(Megatron-style console lines and TensorBoard/W&B scalars, on the last rank), and run_hooks (profiler, GC, start-up
notes: what Megatron-LM's flags ask around the steps)."""

from megatron_ipt.training.callbacks.logger import Logger, arguments, print_arguments, report_parameters
from megatron_ipt.training.callbacks.preemption import ExitCondition
from megatron_ipt.training.callbacks.progress import ProgressLog
from megatron_ipt.training.callbacks.run_hooks import RunHooks, params_norm
from megatron_ipt.training.callbacks.stability import NonFiniteGradNorm, NonFiniteLoss, StabilityGuard, guard_grad_norm
from megatron_ipt.training.callbacks.throughput import Timer, flops_per_iteration, memory_stats

__all__ = [
    "ExitCondition",
    "Logger",
    "arguments",
    "print_arguments",
    "report_parameters",
    "NonFiniteGradNorm",
    "NonFiniteLoss",
    "ProgressLog",
    "RunHooks",
    "StabilityGuard",
    "Timer",
    "flops_per_iteration",
    "guard_grad_norm",
    "memory_stats",
    "params_norm",
]
