"""Logging components: Megatron-style console lines, TensorBoard scalars (Megatron names), throughput and MFU."""
from __future__ import annotations

import math
import time
from datetime import datetime


def flops_per_iteration(args) -> float:
    """Megatron's count (reference §6): 3 (fwd+bwd) x 2 (FMA) x GBS x s x [per layer: QKV+out projections,
    causal attention, MLP; plus logits]."""
    h, s, L = args.hidden_size, args.seq_length, args.num_layers
    kv = h * args.num_query_groups // args.num_attention_heads
    projections = h * (h + 2 * kv) + h * h
    attention = h * s / 2 * 2
    mlp = 3 * h * args.ffn_hidden_size  # SwiGLU: three matrices (gate, up, down)
    per_token = L * (projections + attention + mlp) + h * args.padded_vocab_size
    return 3 * 2 * args.global_batch_size * s * per_token


class Logger:
    """Lives on the last rank (as in Megatron); the others hold a no-op writer."""

    def __init__(self, args, world_size: int, is_last_rank: bool):
        self.args = args
        self.world_size = world_size
        self.active = is_last_rank
        self.writer = None
        if is_last_rank and args.tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=args.tensorboard_dir, max_queue=1000)
        self.flops = flops_per_iteration(args)
        self.interval_losses = []
        self.interval_time = 0.0
        self.skipped = 0
        self.nan_iterations = 0

    def scalar(self, name, value, iteration, samples=None):
        if self.writer is None:
            return
        self.writer.add_scalar(name, value, iteration)
        if samples is not None:
            self.writer.add_scalar(name + " vs samples", value, samples)

    def training_step(self, iteration, consumed, loss, lr, grad_norm, step_time):
        if not self.active:
            return
        a = self.args
        tokens_per_s_gpu = a.global_batch_size * a.seq_length / step_time / self.world_size
        tflops_gpu = self.flops / step_time / 1e12 / self.world_size
        self.scalar("learning-rate", lr, iteration, consumed)
        self.scalar("batch-size", a.global_batch_size, iteration, consumed)
        self.scalar("lm loss", loss, iteration, consumed)
        if grad_norm is not None:
            self.scalar("grad-norm", grad_norm, iteration, consumed)
        self.scalar("iteration-time", step_time, iteration)
        self.scalar("throughput", tflops_gpu, iteration)
        self.scalar("tokens-per-sec-per-gpu", tokens_per_s_gpu, iteration)
        self.scalar("mfu", tflops_gpu / a.peak_tflops, iteration)
        try:
            import torch

            if torch.cuda.is_available():
                self.scalar("mem-allocated-bytes", torch.cuda.memory_allocated(), iteration)
                self.scalar("mem-max-allocated-bytes", torch.cuda.max_memory_allocated(), iteration)
        except Exception:
            pass
        self.interval_losses.append(loss)
        self.interval_time += step_time
        if iteration % a.log_interval == 0 or iteration == a.train_iters:
            n = len(self.interval_losses)
            avg = sum(self.interval_losses) / n
            ms = self.interval_time / n * 1000
            tflops = self.flops / (self.interval_time / n) / 1e12 / self.world_size
            gn = f"{grad_norm:.3f}" if grad_norm is not None else "n/a"
            print(f" [{datetime.now():%Y-%m-%d %H:%M:%S}] iteration {iteration:8d}/{a.train_iters:8d} | "
                  f"consumed samples: {consumed:12d} | elapsed time per iteration (ms): {ms:.1f} | "
                  f"throughput per GPU (TFLOP/s/GPU): {tflops:.3f} | tokens/s/GPU: {tokens_per_s_gpu:.1f} | "
                  f"MFU: {100 * tflops / a.peak_tflops:.3f}% | learning rate: {lr:.6E} | "
                  f"global batch size: {a.global_batch_size:5d} | lm loss: {avg:.6E} | grad norm: {gn} | "
                  f"number of skipped iterations: {self.skipped:3d} | number of nan iterations: "
                  f"{self.nan_iterations:3d} |", flush=True)
            self.interval_losses, self.interval_time = [], 0.0

    def validation(self, iteration, consumed, losses: dict):
        """losses: {'lm loss': overall, 'lm loss/<source>': per data source}."""
        if not self.active:
            return
        parts = []
        for name, value in losses.items():
            self.scalar(f"{name} validation", value, iteration, consumed)
            self.scalar(f"{name} validation ppl", math.exp(min(20.0, value)), iteration, consumed)
            parts.append(f"{name} value: {value:.6E} | {name} PPL: {math.exp(min(20.0, value)):.6E}")
        print("-" * 80 + f"\n validation loss at iteration {iteration} | " + " | ".join(parts) + "\n" + "-" * 80,
              flush=True)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.perf_counter() - self.start
