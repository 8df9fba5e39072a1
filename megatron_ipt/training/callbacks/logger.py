"""The loop's logging, on the last rank as in Megatron-LM: its console lines and TensorBoard scalars, plus per-GPU
tokens/s, TFLOP/s, MFU and memory; and the start-up report: the resolved arguments (Megatron-LM's "arguments" block
on rank 0, and one TensorBoard text per argument) and the parameter counts."""

from __future__ import annotations

import dataclasses
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
        # the guard's running totals at the last console line: the line reports the steps since then, as Megatron-LM's
        # (it resets its skipped/nan counters after each line)
        self.counted = (0, 0)
        directory = run.config.logging.tensorboard_dir
        self.tensorboard = TensorBoardWriter(directory) if is_last_rank and directory else None
        self.wandb = WandbWriter.from_config(run.config) if is_last_rank else None
        self.flops = flops_per_iteration(run.config.model, run.global_batch_size, run.padded_vocab_size)
        self.interval_losses = []
        self.interval_time = 0.0
        self.memory_reported = False
        self.extra = {}
        # --loss-mask-data (synthesizer tuning): the loss is over masked-in tokens only, and the line says so
        self.masked = run.config.data.loss_mask_data
        self.interval_loss_tokens = []

    def _scalar(self, name, value, iteration, samples=None):
        if self.tensorboard is not None:
            self.tensorboard.scalar(name, value, iteration, samples)
        if self.wandb is not None:
            self.wandb.scalar(name, value, iteration)

    def training_step(
        self,
        iteration,
        consumed,
        loss,
        lr,
        grad_norm,
        step_time,
        loss_scale=1.0,
        params_norm=None,
        num_zeros=None,
        loss_tokens=None,
    ):
        """loss_scale: the optimizer's loss scale for this step (1 unless fp16 or --loss-scale); params_norm,
        num_zeros: with --log-params-norm / --log-num-zeros-in-grad; loss_tokens: the global batch's target tokens
        that carry loss (logged with --loss-mask-data, where they are the masked-in tokens only)."""
        if not self.active:
            return
        if self.masked and loss_tokens is not None:
            self.interval_loss_tokens.append(loss_tokens)
            if iteration % self.run.config.logging.tensorboard_log_interval == 0:
                self._scalar("loss-tokens", loss_tokens, iteration, consumed)
        self.extra = {"num zeros": num_zeros, "params norm": params_norm}
        if iteration % self.run.config.logging.tensorboard_log_interval:
            self._record(iteration, consumed, loss, lr, grad_norm, step_time, loss_scale)
            return
        if params_norm is not None:
            self._scalar("params-norm", params_norm, iteration, consumed)
        if num_zeros is not None:
            self._scalar("num-zeros", num_zeros, iteration, consumed)
        step = self._rates(step_time)
        self._scalar("learning-rate", lr, iteration, consumed)
        self._scalar("batch-size", self.run.global_batch_size, iteration, consumed)
        self._scalar("lm loss", loss, iteration, consumed)
        self._scalar("loss-scale", loss_scale, iteration, consumed)
        if grad_norm is not None:
            self._scalar("grad-norm", grad_norm, iteration, consumed)
        self._scalar("iteration-time", step_time, iteration)
        self._scalar("throughput", step["tflops_per_gpu"], iteration)
        self._scalar("tokens-per-sec-per-gpu", step["tokens_per_sec_per_gpu"], iteration)
        self._scalar("mfu", step["mfu"], iteration)
        for name, value in memory_stats().items():
            self._scalar(name, value, iteration)
        self._record(iteration, consumed, loss, lr, grad_norm, step_time, loss_scale)

    def _record(self, iteration, consumed, loss, lr, grad_norm, step_time, loss_scale):
        """The console side of a step: interval averages, and the line every --log-interval iterations."""
        self.interval_losses.append(loss)
        self.interval_time += step_time
        if iteration % self.run.config.logging.log_interval == 0 or iteration == self.run.train_iters:
            self._console_line(iteration, consumed, lr, grad_norm, loss_scale)
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

    def _console_line(self, iteration, consumed, lr, grad_norm, loss_scale):
        n = len(self.interval_losses)
        step_time = self.interval_time / n
        interval = self._rates(step_time)
        gn = f"{grad_norm:.3f}" if grad_norm is not None else "n/a"
        scale = f"loss scale: {loss_scale:.1f} | " if self.run.config.precision.fp16 else ""  # as Megatron-LM
        print(
            f" [{datetime.now():%Y-%m-%d %H:%M:%S}] iteration {iteration:8d}/{self.run.train_iters:8d} | "
            f"consumed samples: {consumed:12d} | elapsed time per iteration (ms): {step_time * 1000:.1f} | "
            f"throughput per GPU (TFLOP/s/GPU): {interval['tflops_per_gpu']:.3f} | "
            f"tokens/s/GPU: {interval['tokens_per_sec_per_gpu']:.1f} | MFU: {100 * interval['mfu']:.3f}% | "
            f"learning rate: {lr:.6E} | global batch size: {self.run.global_batch_size:5d} | "
            f"{self._loss_part(sum(self.interval_losses) / n)}{scale}grad norm: {gn} | "
            + "".join(
                f"{name}: {value:.3f} | " if isinstance(value, float) else f"{name}: {value} | "
                for name, value in self.extra.items()
                if value is not None
            )
            + f"number of skipped iterations: {self.guard.skipped - self.counted[0]:3d} | "
            f"number of nan iterations: {self.guard.nan_iterations - self.counted[1]:3d} |",
            flush=True,
        )
        self.counted = (self.guard.skipped, self.guard.nan_iterations)
        self.interval_losses, self.interval_time, self.interval_loss_tokens = [], 0.0, []

    def _loss_part(self, loss) -> str:
        if not self.masked:
            return f"lm loss: {loss:.6E} | "
        counts = self.interval_loss_tokens
        tokens = f"{sum(counts) / len(counts):.0f}" if counts else "n/a"
        return f"lm loss (masked-in tokens): {loss:.6E} | loss tokens per iteration: {tokens} | "

    def validation(self, iteration, consumed, losses: dict):
        """losses: {'lm loss': over the whole validation blend, 'lm loss/<source>': per data source}."""
        if not self.active:
            return
        parts = []
        for name, value in losses.items():
            ppl = math.exp(min(20.0, value))
            self._scalar(f"{name} validation", value, iteration, consumed)
            self._scalar(f"{name} validation ppl", ppl, iteration, consumed)
            label = name.replace("lm loss", "lm loss (masked-in tokens)", 1) if self.masked else name
            parts.append(f"{label} value: {value:.6E} | {label} PPL: {ppl:.6E}")
        rule = "-" * 100
        print(f"{rule}\n validation loss at iteration {iteration} | " + " | ".join(parts) + f" |\n{rule}", flush=True)

    def arguments(self, iteration: int) -> None:
        """Every resolved argument as TensorBoard text, one tag per argument named after it, as Megatron-LM's
        `write_args_to_tensorboard` writes them (at the iteration the run starts from)."""
        if self.tensorboard is not None:
            for name, value in arguments(self.run).items():
                self.tensorboard.text(name, str(value), iteration)

    def close(self):
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.close()


# -- start-up report ---------------------------------------------------------------------------------------------------

# TokenizerSpec fields under their flags' names (the others as tokenizer_<field>)
_TOKENIZER_ARGS = {
    "type": "tokenizer_type",
    "model": "tokenizer_model",
    "include_special_tokens": "tokenizer_hf_include_special_tokens",
    "tiktoken_pattern": "tiktoken_file_pattern",
    "native": "native_tokenizer",
    "merge_file": "merge_file",
}


def arguments(run) -> dict:
    """The run's arguments, resolved, by their argparse names: every field of every config group (the model's
    `--model` as `model`: a preset, a model file, or `flags`), the tokenizer's, and the values derived at run time
    (world and data-parallel size, global batch, iterations, micro batches, padded vocabulary, kv channels)."""
    config = run.config
    values = {}
    for group in dataclasses.fields(config):
        part = getattr(config, group.name)
        if not dataclasses.is_dataclass(part):  # e.g. ignored_flags: the no-op flags given
            values[group.name] = part
            continue
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            if f.name == "hf_config":
                continue  # a converted model's whole HF config.json: named by `model`, the file that holds it
            if f.name == "source":
                values["model"] = value
            elif f.name == "tokenizer":
                from megatron_ipt.tokenizers import TokenizerSpec

                for spec_field in dataclasses.fields(TokenizerSpec):
                    name = _TOKENIZER_ARGS.get(spec_field.name, "tokenizer_" + spec_field.name)
                    values[name] = getattr(value, spec_field.name) if value is not None else None
            else:
                values[f.name] = value
    model = config.model
    values.update(
        world_size=run.data_parallel_size
        * config.parallel.tensor_model_parallel_size
        * config.parallel.pipeline_model_parallel_size,
        data_parallel_size=run.data_parallel_size,
        global_batch_size=run.global_batch_size,
        train_iters=run.train_iters,
        num_microbatches=run.num_microbatches,
        padded_vocab_size=run.padded_vocab_size,
        kv_channels=model.kv_channels or model.hidden_size // model.num_attention_heads,
    )
    return values


def print_arguments(run) -> None:
    """Megatron-LM's argument dump (rank 0): one dotted line per argument, sorted, between its two rules."""
    if _rank() != 0:
        return
    lines = [f"  {name} {'.' * (48 - len(name))} {value}" for name, value in arguments(run).items()]
    print("------------------------ arguments ------------------------", flush=True)
    for line in sorted(lines, key=str.lower):
        print(line, flush=True)
    print("-------------------- end of arguments ---------------------", flush=True)


def report_parameters(chunks) -> int:
    """Megatron-LM's line per (tensor, pipeline) rank, printed by data-parallel rank 0 of each, with the count of this
    rank's model chunks; then, on rank 0, the model's own count (TP shards summed, replicated parameters and the
    tied output layer's copy on the last pipeline stage counted once). Returns that total, on every rank."""
    import torch
    from megatron.core import parallel_state as ps

    local = sum(p.nelement() for chunk in chunks for p in chunk.parameters())
    tp_rank = ps.get_tensor_model_parallel_rank()
    unique = sum(
        p.nelement()
        for chunk in chunks
        for p in chunk.parameters()
        if (getattr(p, "tensor_model_parallel", False) or tp_rank == 0)
        and not (getattr(p, "shared", False) and getattr(p, "shared_embedding", False))
    )
    from megatron_ipt.training.parallel import device

    total = torch.tensor([unique], dtype=torch.int64, device=device())
    torch.distributed.all_reduce(total)  # every data-parallel replica holds the same model
    total = int(total.item()) // ps.get_data_parallel_world_size()
    if ps.get_data_parallel_rank() == 0:
        print(
            f" > number of parameters on (tensor, pipeline) model parallel rank "
            f"({tp_rank}, {ps.get_pipeline_model_parallel_rank()}): {local}",
            flush=True,
        )
    torch.distributed.barrier()
    if _rank() == 0:
        print(f" > number of parameters in the model: {total}", flush=True)
    return total


def _rank() -> int:
    import torch

    return torch.distributed.get_rank()
