"""The training loop on megatron.core: DDP, Megatron optimizer + LR schedule, pipeline schedules, eval, checkpoints."""

from __future__ import annotations

import math
import os
from functools import partial

import torch
from megatron.core import parallel_state
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_ipt.training import callbacks, checkpoint, data, models, parallel

NonFiniteLoss = callbacks.NonFiniteLoss  # raised by train(); tools/pretrain.py exits 2 on it


def _loss_func(loss_mask, dataset_id, output_tensor):
    losses = output_tensor.float()
    mask = loss_mask.float()
    per_sample_sum = (losses * mask).sum(dim=1)
    per_sample_tokens = mask.sum(dim=1)
    loss = per_sample_sum.sum() / per_sample_tokens.sum().clamp(min=1)
    report = {"lm loss": torch.stack([per_sample_sum.sum().detach(), per_sample_tokens.sum()])}
    if dataset_id is not None:
        for source in dataset_id.unique().tolist():
            sel = dataset_id == source
            report[f"lm loss/{source}"] = torch.stack(
                [per_sample_sum[sel].sum().detach(), per_sample_tokens[sel].sum()]
            )
    return loss, report


def _forward_step(data_iterator, model):
    batch = next(data_iterator)
    output = model(batch["tokens"], batch["position_ids"], batch.get("attention_mask"), labels=batch["labels"])
    return output, partial(_loss_func, batch["loss_mask"], batch.get("dataset_id"))


def _reduce_reports(reports) -> dict:
    """Sum [loss_sum, tokens] per key over microbatches (last PP stage) and over all ranks, so every rank gets the
    global per-token losses; only TP rank 0 of the last stage contributes."""
    keys = sorted({k for r in reports for k in r})
    contribute = parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0
    n_keys = torch.tensor([len(keys) if contribute else 0])
    torch.distributed.all_reduce(n_keys, op=torch.distributed.ReduceOp.MAX)
    all_keys = [None]
    if torch.distributed.get_rank() == torch.distributed.get_world_size() - 1:
        all_keys = [keys]
    torch.distributed.broadcast_object_list(all_keys, src=torch.distributed.get_world_size() - 1)
    keys = all_keys[0]
    totals = torch.zeros(len(keys), 2, dtype=torch.float64)
    if contribute:
        for r in reports:
            for i, k in enumerate(keys):
                if k in r:
                    totals[i] += r[k].to(totals)
    totals = totals.to("cuda") if torch.cuda.is_available() else totals
    torch.distributed.all_reduce(totals)
    return {k: (totals[i, 0] / totals[i, 1].clamp(min=1)).item() for i, k in enumerate(keys)}


def setup(args):
    """Process groups, model chunks (DDP-wrapped), optimizer and scheduler. Returns them as a tuple."""
    parallel.initialize(args)
    from megatron_ipt.training import config as cfg

    cfg.finalize_batch(args, parallel_state.get_data_parallel_world_size())
    tconfig = models.transformer_config(args)
    chunks = models.build_model_chunks(args, tconfig)
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=args.overlap_grad_reduce,
        use_distributed_optimizer=args.use_distributed_optimizer,
        overlap_param_gather=args.overlap_param_gather,
    )
    chunks = [
        DistributedDataParallel(config=tconfig, ddp_config=ddp_config, module=c, disable_bucketing=i > 0)
        for i, c in enumerate(chunks)
    ]
    opt_config = OptimizerConfig(
        optimizer="adam",
        lr=args.lr,
        min_lr=args.min_lr,
        weight_decay=args.weight_decay,
        adam_beta1=args.adam_beta1,
        adam_beta2=args.adam_beta2,
        adam_eps=args.adam_eps,
        clip_grad=args.clip_grad,
        bf16=args.bf16,
        params_dtype=tconfig.params_dtype,
        use_distributed_optimizer=args.use_distributed_optimizer,
    )
    optimizer = get_megatron_optimizer(opt_config, chunks)
    gbs = args.global_batch_size
    decay_iters = args.lr_decay_iters or args.train_iters
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if args.lr_warmup_iters else args.lr,
        max_lr=args.lr,
        min_lr=args.min_lr,
        lr_warmup_steps=args.lr_warmup_iters * gbs,
        lr_decay_steps=decay_iters * gbs,
        lr_decay_style=args.lr_decay_style,
        start_wd=args.weight_decay,
        end_wd=args.weight_decay,
        wd_incr_steps=decay_iters * gbs,
        wd_incr_style="constant",
        wsd_decay_steps=(decay_iters * gbs) // 10 if args.lr_decay_style == "WSD" else None,
        lr_wsd_decay_style="linear" if args.lr_decay_style == "WSD" else None,
        use_checkpoint_opt_param_scheduler=args.use_checkpoint_opt_param_scheduler,
        override_opt_param_scheduler=args.override_opt_param_scheduler,
    )
    callbacks.guard_grad_norm(optimizer)
    tconfig.finalize_model_grads_func = finalize_model_grads
    tconfig.grad_scale_func = optimizer.scale_loss
    tconfig.no_sync_func = [c.no_sync for c in chunks] if len(chunks) > 1 else chunks[0].no_sync
    return chunks, optimizer, scheduler


def _iterators(dataset, consumed, args, n_chunks):
    if dataset is None:
        return None
    its = [data.batches(dataset, consumed, args.micro_batch_size) for _ in range(n_chunks)]
    return its if n_chunks > 1 else its[0]


def evaluate(args, chunks, dataset, source_names):
    for c in chunks:
        c.eval()
    forward_backward = get_forward_backward_func()
    reports = []
    iterator = _iterators(dataset, 0, args, len(chunks))
    with torch.no_grad():
        for _ in range(args.eval_iters):
            reports += forward_backward(
                forward_step_func=_forward_step,
                data_iterator=iterator,
                model=chunks,
                num_microbatches=args.num_microbatches,
                seq_length=args.seq_length,
                micro_batch_size=args.micro_batch_size,
                forward_only=True,
            )
    for c in chunks:
        c.train()
    losses = _reduce_reports(reports)
    named = {"lm loss": losses.pop("lm loss")}
    if len(source_names) > 1:
        for key, value in losses.items():
            named[f"lm loss/{source_names[int(key.split('/')[1])]}"] = value
    return named


def _resume(args, chunks, optimizer, scheduler):
    """(iteration, consumed samples) to start from: 0, 0 or the latest committed checkpoint in --load."""
    if args.save:
        for name in checkpoint.remove_incomplete(args.save):
            _print(f"removed {os.path.join(args.save, name)}: left by a save that never committed")
    if not args.load:
        return 0, 0
    progress = checkpoint.load(
        args.load, chunks, optimizer, scheduler, load_optim=not args.no_load_optim, load_rng=not args.no_load_rng
    )
    if progress is None:
        _print(f"no checkpoint in {args.load} ({checkpoint.MARKER} is missing): starting from scratch")
        return 0, 0
    _print(
        f"loaded checkpoint from {args.load} at iteration {progress['iteration']}"
        + "".join(f"; {note}" for note in progress["notes"])
    )
    return progress["iteration"], progress["consumed_samples"]


def _save(args, iteration, consumed, chunks, optimizer, scheduler):
    checkpoint.save(
        args.save,
        iteration,
        chunks,
        optimizer,
        scheduler,
        {"consumed_samples": consumed},
        args.keep_last,
        mem_efficient=args.distrib_optim_fully_reshardable_mem_efficient,
    )


def train(args, tokenizer) -> dict:
    """Run training; returns {'losses': [per-iteration global lm loss], 'step_times', 'iteration', 'chunks'}."""
    chunks, optimizer, scheduler = setup(args)
    iteration, consumed = _resume(args, chunks, optimizer, scheduler)
    if args.save and torch.distributed.get_rank() == 0:
        from megatron_ipt.training import config

        checkpoint.write_model_file(args.save, config.model_description(args))
    train_ds, valid_ds, _, n_sources = data.build_datasets(args, data.MegatronTokenizerAdapter(tokenizer))
    prefixes, _ = data.get_blend_from_list(args.data_path)
    source_names = [os.path.basename(p) for p in prefixes]
    train_iter = _iterators(train_ds, consumed, args, len(chunks))
    world = torch.distributed.get_world_size()
    guard = callbacks.StabilityGuard(skip=args.skip_nonfinite_steps)
    logger = callbacks.Logger(args, world, torch.distributed.get_rank() == world - 1, guard)
    forward_backward = get_forward_backward_func()
    losses, step_times = [], []
    try:
        while iteration < args.train_iters:
            with callbacks.Timer() as timer:
                for c in chunks:
                    c.zero_grad_buffer()
                optimizer.zero_grad()
                reports = forward_backward(
                    forward_step_func=_forward_step,
                    data_iterator=train_iter,
                    model=chunks,
                    num_microbatches=args.num_microbatches,
                    seq_length=args.seq_length,
                    micro_batch_size=args.micro_batch_size,
                    forward_only=False,
                )
                loss = _reduce_reports(reports)["lm loss"]
                grad_norm = None
                if not math.isfinite(loss):
                    guard.nonfinite("lm loss", loss, iteration + 1)
                else:
                    try:
                        updated, grad_norm, _ = optimizer.step()
                    except callbacks.NonFiniteGradNorm as error:
                        grad_norm = error.value
                        guard.nonfinite("grad norm", grad_norm, iteration + 1)
                    else:
                        if updated:
                            scheduler.step(increment=args.global_batch_size)
                        else:
                            guard.skipped += 1
            iteration += 1
            consumed += args.global_batch_size
            losses.append(loss)
            step_times.append(timer.elapsed)
            logger.training_step(iteration, consumed, loss, optimizer.param_groups[0]["lr"], grad_norm, timer.elapsed)
            if args.eval_interval and iteration % args.eval_interval == 0 and valid_ds is not None:
                logger.validation(iteration, consumed, evaluate(args, chunks, valid_ds, source_names))
            if args.save and args.save_interval and iteration % args.save_interval == 0:
                _save(args, iteration, consumed, chunks, optimizer, scheduler)
        if args.save and not (args.save_interval and iteration % args.save_interval == 0):
            _save(args, iteration, consumed, chunks, optimizer, scheduler)
    finally:
        logger.close()
    return {"losses": losses, "step_times": step_times, "iteration": iteration, "chunks": chunks}


def _print(message: str) -> None:
    if torch.distributed.get_rank() == torch.distributed.get_world_size() - 1:
        print(message, flush=True)
