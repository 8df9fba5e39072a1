"""The loop's logging, on the last rank as in Megatron-LM: its console lines and TensorBoard scalars, plus per-GPU
tokens/s, TFLOP/s, MFU and memory."""

from __future__ import annotations

import math
from datetime import datetime

from megatron_ipt.training.callbacks.tensorboard import TensorBoardWriter
from megatron_ipt.training.callbacks.throughput import flops_per_iteration, memory_stats, rates
from megatron_ipt.training.callbacks.wandb import WandbWriter


class Logger:
    def __init__(self, run, world_size: int, is_last_rank: bool, guard):
        """run: the config.ResolvedConfig being trained."""
        self.run = run
        self.world_size = world_size
        self.active = is_last_rank
        self.guard = guard  # the StabilityGuard whose counts the console line reports
        directory = run.config.logging.tensorboard_dir
        self.tensorboard = TensorBoardWriter(directory) if is_last_rank and directory else None
        self.wandb = WandbWriter.from_config(run.config) if is_last_rank else None
        self.flops = flops_per_iteration(run.config.model, run.global_batch_size, run.padded_vocab_size)
        self.interval_losses = []
        self.interval_time = 0.0
        self.memory_reported = False
        self.extra = {}

    def _scalar(self, name, value, iteration, samples=None):
        if self.tensorboard is not None:
            self.tensorboard.scalar(name, value, iteration, samples)
        if self.wandb is not None:
            self.wandb.scalar(name, value, iteration)

    def training_step(self, iteration, consumed, loss, lr, grad_norm, step_time, params_norm=None, num_zeros=None):
        """params_norm, num_zeros: with --log-params-norm / --log-num-zeros-in-grad."""
        if not self.active:
            return
        self.extra = {"num zeros": num_zeros, "params norm": params_norm}
        if iteration % self.run.config.logging.tensorboard_log_interval:
            self._record(iteration, consumed, loss, lr, grad_norm, step_time)
            return
        if params_norm is not None:
            self._scalar("params-norm", params_norm, iteration, consumed)
        if num_zeros is not None:
            self._scalar("num-zeros", num_zeros, iteration, consumed)
        step = self._rates(step_time)
        self._scalar("learning-rate", lr, iteration, consumed)
        self._scalar("batch-size", self.run.global_batch_size, iteration, consumed)
        self._scalar("lm loss", loss, iteration, consumed)
        if grad_norm is not None:
            self._scalar("grad-norm", grad_norm, iteration, consumed)
        self._scalar("iteration-time", step_time, iteration)
        self._scalar("throughput", step["tflops_per_gpu"], iteration)
        self._scalar("tokens-per-sec-per-gpu", step["tokens_per_sec_per_gpu"], iteration)
        self._scalar("mfu", step["mfu"], iteration)
        for name, value in memory_stats().items():
            self._scalar(name, value, iteration)
        self._record(iteration, consumed, loss, lr, grad_norm, step_time)

    def _record(self, iteration, consumed, loss, lr, grad_norm, step_time):
        """The console side of a step: interval averages, and the line every --log-interval iterations."""
        self.interval_losses.append(loss)
        self.interval_time += step_time
        if iteration % self.run.config.logging.log_interval == 0 or iteration == self.run.train_iters:
            self._console_line(iteration, consumed, lr, grad_norm)
            if not self.memory_reported:
                self.memory_reported = True
                memory = memory_stats()
                print(
                    f"[Rank {_rank()}] (after {iteration} iterations) memory (MB) | "
                    + " | ".join(
                        f"{name.replace('-bytes', '')}: {value / 2**20:.1f}"
                        for name, value in memory.items()
                        if name.endswith("-bytes")
                    ),
                    flush=True,
                )

    def _rates(self, step_time):
        tokens = self.run.global_batch_size * self.run.config.model.seq_length
        return rates(self.flops, tokens, step_time, self.world_size, self.run.config.logging.peak_tflops)

    def _console_line(self, iteration, consumed, lr, grad_norm):
        n = len(self.interval_losses)
        step_time = self.interval_time / n
        interval = self._rates(step_time)
        gn = f"{grad_norm:.3f}" if grad_norm is not None else "n/a"
        print(
            f" [{datetime.now():%Y-%m-%d %H:%M:%S}] iteration {iteration:8d}/{self.run.train_iters:8d} | "
            f"consumed samples: {consumed:12d} | elapsed time per iteration (ms): {step_time * 1000:.1f} | "
            f"throughput per GPU (TFLOP/s/GPU): {interval['tflops_per_gpu']:.3f} | "
            f"tokens/s/GPU: {interval['tokens_per_sec_per_gpu']:.1f} | MFU: {100 * interval['mfu']:.3f}% | "
            f"learning rate: {lr:.6E} | global batch size: {self.run.global_batch_size:5d} | "
            f"lm loss: {sum(self.interval_losses) / n:.6E} | grad norm: {gn} | "
            + "".join(
                f"{name}: {value:.3f} | " if isinstance(value, float) else f"{name}: {value} | "
                for name, value in self.extra.items()
                if value is not None
            )
            + f"number of skipped iterations: {self.guard.skipped:3d} | "
            f"number of nan iterations: {self.guard.nan_iterations:3d} |",
            flush=True,
        )
        self.interval_losses, self.interval_time = [], 0.0

    def validation(self, iteration, consumed, losses: dict):
        """losses: {'lm loss': over the whole validation blend, 'lm loss/<source>': per data source}."""
        if not self.active:
            return
        parts = []
        for name, value in losses.items():
            ppl = math.exp(min(20.0, value))
            self._scalar(f"{name} validation", value, iteration, consumed)
            self._scalar(f"{name} validation ppl", ppl, iteration, consumed)
            parts.append(f"{name} value: {value:.6E} | {name} PPL: {ppl:.6E}")
        rule = "-" * 100
        print(f"{rule}\n validation loss at iteration {iteration} | " + " | ".join(parts) + f" |\n{rule}", flush=True)

    def close(self):
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.close()


def _rank() -> int:
    import torch

    return torch.distributed.get_rank()
