"""What Megatron-LM's flags ask of a run around its steps: start-up notes (the no-op flags given), --logging-level,
--deterministic-mode, --manual-gc, --empty-unused-memory-level and --profile (a PyTorch profiler trace of steps
[--profile-step-start, --profile-step-end) on --profile-ranks, written into --tensorboard-dir as TensorBoard's profiler
plugin reads it, as Megatron-LM's --use-pytorch-profiler does). The loop calls `start`, `before_step`, `after_step`
and `close`; each is a few comparisons when its flags are off."""

from __future__ import annotations

import gc
import logging
import os

import torch


class RunHooks:
    def __init__(self, config, notes=()):
        """config: the TrainingConfig; notes: start-up lines to print (the no-op flags given and why)."""
        self.log = config.logging
        self.precision = config.precision
        self.notes = list(notes)
        self.rank = torch.distributed.get_rank()
        self.profiler = None

    def start(self) -> None:
        if self.log.logging_level is not None:
            logging.getLogger().setLevel(self.log.logging_level)
        if self.precision.deterministic_mode:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        if self.log.manual_gc:
            gc.disable()  # Megatron-LM: collect at the same steps on every rank instead of whenever a threshold hits
            gc.collect()
        if self.rank == 0:
            for note in self.notes:
                print(f"note: {note}", flush=True)

    def before_step(self, iteration: int) -> None:
        """iteration: steps completed so far."""
        if self.log.profile and iteration == self.log.profile_step_start and self.rank in self.log.profile_ranks:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(
                activities=activities,
                record_shapes=True,
                with_stack=False,
                on_trace_ready=torch.profiler.tensorboard_trace_handler(
                    self.log.tensorboard_dir, worker_name=f"rank{self.rank}"
                ),
            )
            self.profiler.start()

    def after_step(self, iteration: int) -> None:
        """iteration: steps completed, this one included."""
        if self.log.empty_unused_memory_level >= 1 and torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self.log.manual_gc and self.log.manual_gc_interval and iteration % self.log.manual_gc_interval == 0:
            gc.collect()
        if self.profiler is not None and iteration >= self.log.profile_step_end:
            self._stop_profiler()

    def _stop_profiler(self) -> None:
        self.profiler.stop()  # writes the trace (on_trace_ready)
        print(
            f"[Rank {self.rank}] profiler trace of iterations {self.log.profile_step_start + 1}-"
            f"{self.log.profile_step_end} written to {self.log.tensorboard_dir}",
            flush=True,
        )
        self.profiler = None

    def close(self) -> None:
        if self.profiler is not None:
            self._stop_profiler()
        if self.log.manual_gc:
            gc.enable()


def params_norm(chunks) -> float:
    """The L2 norm of all parameters (Megatron-LM's 'params-norm'): tensor-parallel shards summed over the TP group,
    replicated parameters counted once, pipeline stages summed; every rank gets the value."""
    from megatron.core import parallel_state

    sharded = torch.zeros(1, dtype=torch.float64)
    replicated = torch.zeros(1, dtype=torch.float64)
    for chunk in chunks:
        for param in chunk.parameters():
            if getattr(param, "shared", False):
                continue  # a tied output layer's copy of the embedding: counted on the first stage
            square = param.detach().double().pow(2).sum().cpu()
            if getattr(param, "tensor_model_parallel", False):
                sharded += square
            else:
                replicated += square
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sharded = sharded.to(device)
    torch.distributed.all_reduce(sharded, group=parallel_state.get_tensor_model_parallel_group())
    total = sharded + replicated.to(device)
    torch.distributed.all_reduce(total, group=parallel_state.get_pipeline_model_parallel_group())
    return total.sqrt().item()
