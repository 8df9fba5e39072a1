"""Training throughput on one GPU: our loop (tools/pretrain.py's) on a real-size preset in BF16, and its step time
against a bare megatron-core forward-backward loop on the same model.

Ours: `loop.train` with `--mock-data` (megatron-core's MockGPTDataset, so no data files), `--bf16`, and the layer spec
that `models.build` picks (Transformer Engine's when TE imports, else megatron-core's local one; said which). With the
local spec attention is unfused and its memory grows with seq^2, so selective recomputation of core attention is on
(`--recompute-granularity selective`, as Megatron-LM runs without flash attention); with TE it is off.
The reference: the same `models.build` model (same TransformerConfig and spec) in megatron-core's Float16Module, the
same micro batches, megatron-core's `forward_backward_no_pipelining`, and a plain `torch.optim.AdamW` step on the
BF16 parameters (no DDP grad buffers, no fp32 main weights, no grad-norm clipping: what our loop adds is measured).
Figures: tokens/s/GPU, TFLOP/s/GPU and MFU with the FLOP count the trainer logs (callbacks.flops_per_iteration,
Megatron-LM's formula), against the GPU's dense BF16 peak read from its name (callbacks.throughput.PEAK_BF16_TFLOPS;
an unknown GPU prints MFU n/a). Each figure is the mean over --steps steps after --warmup untimed ones.

    PYTHONPATH=. python benchmarks/gpu_throughput.py [--model instructlm-1.3b] [--seq-length 4096] [--json OUT]
    PYTHONPATH=. python benchmarks/gpu_throughput.py --dry-run   # no GPU needed: tiny preset, 3 steps (the plumbing)

Exit status 3 when the model does not fit the GPU (examples/gpu_check.sh then tries a smaller preset).
"""

import argparse
import gc
import os
import socket
import sys
import time

OUT_OF_MEMORY = 3


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _rendezvous() -> None:
    """One process, a fresh port per run (each run sets up and tears down its own process group)."""
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=_free_port())


def _flags(opts, spec: str, peak_tflops=None) -> list:
    flags = [
        "--model",
        opts.model,
        "--seq-length",
        str(opts.seq_length),
        "--max-position-embeddings",
        str(opts.seq_length),
        "--micro-batch-size",
        str(opts.micro_batch_size),
        "--global-batch-size",
        str(opts.global_batch_size),
        "--train-iters",
        str(opts.warmup + opts.steps),
        "--mock-data",
        "--split",
        "100,0,0",
        "--lr",
        "1e-4",
        "--log-interval",
        str(opts.warmup + opts.steps),
        "--bf16",
    ]
    if spec == "local":
        flags += ["--recompute-granularity", "selective"]
    if peak_tflops:
        flags += ["--peak-tflops", str(peak_tflops)]  # so the trainer's own log line reports the same MFU
    return flags


def _config(flags):
    from megatron_ipt.training import config

    return config.TrainingConfig.from_args(config.build_parser().parse_args(flags))


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _release() -> None:
    import torch

    from megatron_ipt.training import parallel

    parallel.destroy()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def ours(cfg, warmup: int) -> float:
    """Mean step time of tools/pretrain.py's loop after `warmup` steps (its own timer: each step ends with the loss
    and grad-norm reads, which wait for the GPU)."""
    from megatron_ipt.training import loop

    _rendezvous()
    result = loop.train(cfg, None)
    times = result["step_times"][warmup:]
    del result
    _release()
    return sum(times) / len(times)


def bare(cfg, warmup: int) -> float:
    """Mean step time of the bare megatron-core loop (see the module doc) on the same model and micro batches."""
    import torch
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.transformer.module import Float16Module

    from megatron_ipt.training import datasets, loop, models

    _rendezvous()
    chunks, tconfig = models.build(cfg.model, cfg.parallel, cfg.precision, cfg.init)
    model = Float16Module(tconfig, chunks[0]) if cfg.precision.bf16 else chunks[0]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=torch.cuda.is_available())
    run = cfg.resolve(1)
    train_ds = datasets.build_datasets(run, datasets.MockTokenizer(cfg.model.vocab_size))[0]
    iterator = datasets.batches(train_ds, 0, cfg.optimizer.micro_batch_size)
    forward_backward = get_forward_backward_func()

    for i in range(run.train_iters):
        if i == warmup:  # the timed steps start once the warm-up steps are done on the GPU
            _synchronize()
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        forward_backward(
            forward_step_func=loop._forward_step,
            data_iterator=iterator,
            model=[model],
            num_microbatches=run.num_microbatches,
            seq_length=cfg.model.seq_length,
            micro_batch_size=cfg.optimizer.micro_batch_size,
            forward_only=False,
        )
        optimizer.step()
    _synchronize()
    elapsed = (time.perf_counter() - start) / (run.train_iters - warmup)
    del model, chunks, optimizer
    _release()
    return elapsed


def device_report(dry_run: bool, peak_override=None) -> dict:
    """The device, its dense BF16 peak and why MFU is n/a when there is none."""
    import torch

    from megatron_ipt.training.callbacks.throughput import peak_bf16_tflops

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peak = peak_override or peak_bf16_tflops(name)
        why = None if peak else f"{name!r} is not in callbacks.throughput.PEAK_BF16_TFLOPS (give --peak-tflops)"
    else:
        name, peak = "cpu (dry run)", peak_override
        why = None if peak else "a CPU dry run: no GPU peak to compare with"
    return {"device": name, "peak_tflops": peak, "mfu_na_reason": why, "dry_run": dry_run}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="instructlm-1.3b", help="a preset or model JSON (default instructlm-1.3b)")
    p.add_argument("--seq-length", type=int, default=4096)
    p.add_argument("--micro-batch-size", type=int, default=1)
    p.add_argument("--global-batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=20, help="timed steps of each loop")
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps of each loop")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense BF16 peak for MFU (default: by GPU name)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the plumbing without a GPU: the tiny preset, seq 64, 3 steps after 1 warm-up (figures meaningless)",
    )
    opts = p.parse_args(argv)
    import torch

    if opts.dry_run:
        opts.model, opts.seq_length, opts.micro_batch_size, opts.global_batch_size = "tiny", 64, 2, 4
        opts.steps, opts.warmup = 3, 1
    elif not torch.cuda.is_available():
        print("gpu_throughput: no CUDA GPU here; pass --dry-run to check the plumbing on CPU", file=sys.stderr)
        return 2

    from megatron_ipt.training import callbacks, models

    device = device_report(opts.dry_run, opts.peak_tflops)
    cfg0 = _config(_flags(opts, "local"))
    spec = models.transformer_impl(cfg0.precision)
    cfg = _config(_flags(opts, spec, device["peak_tflops"]))
    why_spec = "Transformer Engine imports" if spec == "transformer_engine" else "Transformer Engine does not import"
    print(
        f"gpu_throughput: {device['device']}, model {opts.model}, seq {opts.seq_length}, micro batch "
        f"{opts.micro_batch_size}, global batch {opts.global_batch_size}, bf16, spec {spec} ({why_spec})"
        + (", selective recompute of core attention" if cfg.precision.recompute_granularity else "")
        + f"; {opts.steps} timed steps after {opts.warmup} warm-up, each loop",
        flush=True,
    )
    try:
        ours_time = ours(cfg, opts.warmup)
        bare_time = bare(cfg, opts.warmup)
    except torch.OutOfMemoryError as error:
        print(f"gpu_throughput: out of memory with {opts.model} at seq {opts.seq_length}: {error}", flush=True)
        return OUT_OF_MEMORY

    run = cfg.resolve(1)
    flops = callbacks.flops_per_iteration(cfg.model, run.global_batch_size, run.padded_vocab_size)
    tokens = run.global_batch_size * cfg.model.seq_length
    figures = callbacks.throughput.rates(flops, tokens, ours_time, 1, device["peak_tflops"] or float("nan"))
    result = {
        **device,
        "model": opts.model,
        "spec": spec,
        "recompute": cfg.precision.recompute_granularity,
        "seq_length": opts.seq_length,
        "micro_batch_size": opts.micro_batch_size,
        "global_batch_size": opts.global_batch_size,
        "steps": opts.steps,
        "warmup": opts.warmup,
        "flops_per_step": flops,
        "step_time_s": ours_time,
        "bare_step_time_s": bare_time,
        "ratio_vs_bare": ours_time / bare_time,
        "tokens_per_sec_per_gpu": figures["tokens_per_sec_per_gpu"],
        "tflops_per_gpu": figures["tflops_per_gpu"],
        "mfu": figures["mfu"] if device["peak_tflops"] else None,
    }
    mfu = f"{100 * result['mfu']:.1f}%" if result["mfu"] is not None else "n/a"
    print(
        f"ours: {ours_time * 1000:.1f} ms/step | tokens/s/GPU: {result['tokens_per_sec_per_gpu']:.0f} | "
        f"TFLOP/s/GPU: {result['tflops_per_gpu']:.1f} | MFU: {mfu}"
        + (f" (of {device['peak_tflops']:.0f} TFLOP/s dense BF16)" if device["peak_tflops"] else ""),
        flush=True,
    )
    if device["mfu_na_reason"]:
        print(f"MFU n/a: {device['mfu_na_reason']}", flush=True)
    print(
        f"bare megatron-core: {bare_time * 1000:.1f} ms/step | ours / bare step time: {result['ratio_vs_bare']:.3f}x",
        flush=True,
    )
    if opts.json:
        from megatron_ipt.io.atomic import write_json_atomic

        write_json_atomic(opts.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
