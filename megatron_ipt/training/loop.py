"""The training loop on megatron.core: DDP, Megatron optimizer + LR schedule, pipeline schedules, eval, checkpoints."""

from __future__ import annotations

import math
import time
from functools import partial

import torch
from megatron.core import parallel_state
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig as MegatronOptimizerConfig
from megatron.core.optimizer import get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.transformer.module import Float16Module

from megatron_ipt.training import callbacks, checkpoint, datasets, loss_mask_data, models, parallel
from megatron_ipt.training.config import ResolvedConfig, TrainingConfig
from megatron_ipt.training.errors import TrainingInputError

NonFiniteLoss = callbacks.NonFiniteLoss  # raised by train(); tools/pretrain.py exits 2 on it


def _loss_func(loss_mask, dataset_id, output_tensor, per_token=False):
    """per_token (--calculate-per-token-loss): return (loss sum, loss tokens) and let megatron's schedule and
    finalize_model_grads divide by the global batch's tokens, as Megatron-LM does; else this micro batch's mean.
    With context parallelism each rank holds a slice of every sequence: the token count is the whole sequences'."""
    losses = output_tensor.float()
    mask = loss_mask.float()
    per_sample_sum = (losses * mask).sum(dim=1)
    per_sample_tokens = mask.sum(dim=1)
    if per_token:
        total = per_sample_sum.sum()
        return total, per_sample_tokens.sum().int(), _report(per_sample_sum, per_sample_tokens, dataset_id)
    tokens = per_sample_tokens.sum()
    cp = parallel_state.get_context_parallel_world_size()
    if cp > 1:
        tokens = tokens.detach().clone()
        torch.distributed.all_reduce(tokens, group=parallel_state.get_context_parallel_group())
        # DDP averages gradients over data x context parallel ranks; each CP rank's share is a slice of one sum
        return per_sample_sum.sum() * cp / tokens.clamp(min=1), _report(per_sample_sum, per_sample_tokens, dataset_id)
    loss = per_sample_sum.sum() / tokens.clamp(min=1)
    return loss, _report(per_sample_sum, per_sample_tokens, dataset_id)


def _report(per_sample_sum, per_sample_tokens, dataset_id):
    report = {"lm loss": torch.stack([per_sample_sum.sum().detach(), per_sample_tokens.sum()])}
    if dataset_id is not None:
        for source in dataset_id.unique().tolist():
            sel = dataset_id == source
            report[f"lm loss/{source}"] = torch.stack(
                [per_sample_sum[sel].sum().detach(), per_sample_tokens[sel].sum()]
            )
    return report


def _forward_step(data_iterator, model, per_token=False):
    batch = next(data_iterator)
    if parallel_state.get_context_parallel_world_size() > 1:
        from megatron.core.utils import get_batch_on_this_cp_rank

        batch = get_batch_on_this_cp_rank(batch)  # this rank's two chunks of every sequence (load-balanced causal)
    output = model(batch["tokens"], batch["position_ids"], batch.get("attention_mask"), labels=batch["labels"])
    return output, partial(_loss_func, batch["loss_mask"], batch.get("dataset_id"), per_token=per_token)


def _forward_step_for(config):
    # looked up at call time: tests/training/fault_check.py replaces _forward_step
    return partial(_forward_step, per_token=True) if config.optimizer.calculate_per_token_loss else _forward_step


def _reduce_reports(reports) -> dict:
    """The global per-token loss per key (see _reduce_totals)."""
    return {k: total / max(tokens, 1) for k, (total, tokens) in _reduce_totals(reports).items()}


def _reduce_totals(reports) -> dict:
    """Sum [loss_sum, tokens] per key over microbatches (last PP stage) and over all ranks, so every rank gets the
    global (loss sum, loss tokens); only TP rank 0 of the last stage contributes."""
    keys = sorted({k for r in reports for k in r})
    contribute = parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0
    n_keys = torch.tensor([len(keys) if contribute else 0], device=parallel.device())
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
    totals = totals.to(parallel.device())
    torch.distributed.all_reduce(totals)
    return {k: (totals[i, 0].item(), int(totals[i, 1].item())) for i, k in enumerate(keys)}


def setup(config: TrainingConfig):
    """Process groups, model chunks (DDP-wrapped), optimizer and scheduler, and the config resolved for this run's
    data-parallel size. Returns (resolved config, chunks, optimizer, scheduler)."""
    chunks, tconfig = models.build(config.model, config.parallel, config.precision, config.init)
    run = config.resolve(parallel_state.get_data_parallel_world_size())
    callbacks.print_arguments(run)  # the start-up report, as Megatron-LM prints it
    callbacks.report_parameters(chunks)
    p, o, prec = config.parallel, config.optimizer, config.precision
    if prec.bf16 or prec.fp16:
        # As Megatron-LM's get_model: every parameter in the half dtype (the local spec's norms are built in fp32
        # whatever params_dtype says), half inputs on the first stage, fp32 outputs on the last. Without it the
        # fp32 norm weights sit beside the half ones and megatron's Float16 optimizer cannot checkpoint them: its
        # sharded_state_dict maps optimizer state to model tensors through the half parameters only.
        chunks = [Float16Module(tconfig, c) for c in chunks]
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=not (config.precision.bf16 and p.grad_reduce_in_bf16),
        fp8_param_gather=config.precision.fp8_param_gather,
        overlap_grad_reduce=p.overlap_grad_reduce,
        use_distributed_optimizer=p.use_distributed_optimizer,
        overlap_param_gather=p.overlap_param_gather,
    )
    chunks = [
        DistributedDataParallel(config=tconfig, ddp_config=ddp_config, module=c, disable_bucketing=i > 0)
        for i, c in enumerate(chunks)
    ]
    opt_config = MegatronOptimizerConfig(
        optimizer="adam",
        lr=o.lr,
        min_lr=o.min_lr,
        weight_decay=o.weight_decay,
        adam_beta1=o.adam_beta1,
        adam_beta2=o.adam_beta2,
        adam_eps=o.adam_eps,
        clip_grad=o.clip_grad,
        bf16=prec.bf16,
        fp16=prec.fp16,
        loss_scale=prec.loss_scale,
        initial_loss_scale=prec.initial_loss_scale,
        min_loss_scale=prec.min_loss_scale,
        loss_scale_window=prec.loss_scale_window,
        hysteresis=prec.hysteresis,
        params_dtype=tconfig.params_dtype,
        use_distributed_optimizer=p.use_distributed_optimizer,
        decoupled_lr=o.decoupled_lr,
        decoupled_min_lr=o.decoupled_min_lr,
        log_num_zeros_in_grad=config.logging.log_num_zeros_in_grad,
    )
    optimizer = get_megatron_optimizer(opt_config, chunks)
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if run.lr_warmup_steps else o.lr,
        max_lr=o.lr,
        min_lr=o.min_lr,
        lr_warmup_steps=run.lr_warmup_steps,
        lr_decay_steps=run.lr_decay_steps,
        lr_decay_style=o.lr_decay_style,
        start_wd=o.weight_decay,
        end_wd=o.weight_decay,
        wd_incr_steps=run.wd_incr_steps,
        wd_incr_style="constant",
        wsd_decay_steps=run.lr_decay_steps // 10 if o.lr_decay_style == "WSD" else None,
        lr_wsd_decay_style="linear" if o.lr_decay_style == "WSD" else None,
        use_checkpoint_opt_param_scheduler=o.use_checkpoint_opt_param_scheduler,
        override_opt_param_scheduler=o.override_opt_param_scheduler,
    )
    callbacks.guard_grad_norm(optimizer)
    tconfig.finalize_model_grads_func = finalize_model_grads
    tconfig.calculate_per_token_loss = o.calculate_per_token_loss
    tconfig.grad_scale_func = optimizer.scale_loss
    tconfig.no_sync_func = [c.no_sync for c in chunks] if len(chunks) > 1 else chunks[0].no_sync
    return run, chunks, optimizer, scheduler


def _iterators(dataset, consumed, micro_batch_size, n_chunks):
    if dataset is None:
        return None
    its = [datasets.batches(dataset, consumed, micro_batch_size) for _ in range(n_chunks)]
    return its if n_chunks > 1 else its[0]


def evaluate(run: ResolvedConfig, chunks, dataset, source_names):
    config = run.config
    for c in chunks:
        c.eval()
    forward_backward = get_forward_backward_func()
    reports = []
    iterator = _iterators(dataset, 0, config.optimizer.micro_batch_size, len(chunks))
    with torch.no_grad():
        for _ in range(config.logging.eval_iters):
            reports += forward_backward(
                forward_step_func=_forward_step_for(config),
                data_iterator=iterator,
                model=chunks,
                num_microbatches=run.num_microbatches,
                seq_length=config.model.seq_length,
                micro_batch_size=config.optimizer.micro_batch_size,
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


def _resume(run: ResolvedConfig, chunks, optimizer, scheduler) -> dict:
    """Where to start: iteration 0 or the latest committed checkpoint in --load; its progress as checkpoint.load
    returns it ({'iteration', 'consumed_samples', and checkpoint.PROGRESS_KEYS, None where unknown})."""
    config = run.config.checkpoint
    start = {"iteration": 0, "consumed_samples": 0, **{key: None for key in checkpoint.PROGRESS_KEYS}}
    if not config.load:
        return start
    fresh = checkpoint.check_load_dir(config.load, config.save)  # a missing --load is an error unless it is --save
    if fresh and config.exit_on_missing_checkpoint:  # Megatron-LM's meaning: exit non-zero instead
        raise TrainingInputError(
            f"--exit-on-missing-checkpoint: no checkpoint in {config.load} "
            f"(no {checkpoint.MARKER}); not starting from iteration 0"
        )
    if fresh:
        _print(fresh)
        return start
    progress = checkpoint.load(
        config.load,
        chunks,
        optimizer,
        scheduler,
        load_optim=not config.no_load_optim,
        load_rng=not config.no_load_rng,
        model_json=run.config.model.to_json(),
        check_progress=partial(_check_phase_batch, run),
    )
    if progress is None:  # the marker went away since check_load_dir
        _print(f"no checkpoint in {config.load} yet: starting from iteration 0")
        return start
    _print(
        f"loaded checkpoint from {config.load} at iteration {progress['iteration']}"
        + "".join(f"; {note}" for note in progress["notes"])
    )
    return progress


def _check_phase_batch(run: ResolvedConfig, meta: dict) -> None:
    """With --phase-transition-iterations the global batch size must be the checkpoint's (Megatron-LM compares it
    too): a phase's iterations are counted in its batches."""
    iteration = meta.get("iteration") or 0
    if not run.config.data.phase_transition_iterations or meta.get("kind") != "training" or not iteration:
        return
    saved = meta.get("global_batch_size") or meta.get("consumed_samples", 0) // iteration  # older: fixed batches
    if saved != run.global_batch_size:
        raise SystemExit(
            f"--phase-transition-iterations needs one global batch size across phases: {run.config.checkpoint.load} "
            f"was trained with {saved}, this run has --global-batch-size {run.global_batch_size}"
        )


def _blend(config: TrainingConfig) -> str:
    """The training data as a checkpoint records it: --data-path's words, or 'mock'."""
    return "mock" if config.data.mock_data else " ".join(config.data.data_path or ())


def _data_start(run: ResolvedConfig, progress: dict) -> int:
    """The sample of this run's training blend to start from, said where it matters. Without phases: the consumed
    samples (the checkpoint's --data-path differing is said, not refused: Megatron-LM does not look). With
    --phase-transition-iterations, as Megatron-LM (the global batch size is checked at load: _check_phase_batch): a
    run starts at sample (iteration - its phase's first iteration) x global batch of a blend sized for its phase
    alone, so each phase reads its --data-path from the first sample."""
    iteration, consumed, was = progress["iteration"], progress["consumed_samples"], progress["data_path"]
    now = _blend(run.config)
    changed = f"; --data-path was {was!r} at iteration {iteration}" if was is not None and was != now else ""
    transitions = run.config.data.phase_transition_iterations
    if not transitions:
        if changed and iteration:
            _print(f"note: training data changed{changed}; continuing at sample {consumed} of this one's order")
        return consumed
    first, end = run.phase(iteration)
    start = (iteration - first) * run.global_batch_size
    _print(
        f"phase {transitions.index(first) + 2 if first else 1} of {len(transitions) + 1}: iterations {first + 1}-{end} "
        f"on --data-path {now!r}, from sample {start} of the phase's {(end - first) * run.global_batch_size}{changed}"
    )
    return start


def _save(run: ResolvedConfig, iteration, consumed, flops, chunks, optimizer, scheduler, progress_log):
    config = run.config.checkpoint
    progress = {
        "consumed_samples": consumed,
        "global_batch_size": run.global_batch_size,
        "data_path": _blend(run.config),
        "floating_point_operations": flops,
    }
    checkpoint.save(
        config.save,
        iteration,
        chunks,
        optimizer,
        scheduler,
        progress,
        config.keep_last,
        mem_efficient=config.distrib_optim_fully_reshardable_mem_efficient,
    )
    if progress_log:
        progress_log.saved(iteration, flops, consumed, run.config.model.seq_length)
    return iteration


def train(config: TrainingConfig, tokenizer) -> dict:
    """Run training; returns {'losses': [per-iteration global lm loss], 'step_times', 'iteration', 'chunks'}."""
    job_start = time.time()
    run, chunks, optimizer, scheduler = setup(config)
    ck, log = config.checkpoint, config.logging
    world = torch.distributed.get_world_size()
    progress_log = None
    if ck.save:  # this job's lock on the directory, then what killed saves left there (checkpoint.py)
        for line in checkpoint.open_save_dir(ck.save):
            _print(line)
        if log.log_progress:
            progress_log = callbacks.ProgressLog(ck.save, world, job_start)
            progress_log.start()
    progress = _resume(run, chunks, optimizer, scheduler)
    iteration, consumed = progress["iteration"], progress["consumed_samples"]
    flops_per_iteration = callbacks.flops_per_iteration(config.model, run.global_batch_size, run.padded_vocab_size)
    flops = progress["floating_point_operations"]
    if flops is None:  # a checkpoint from before we recorded them (or none): the FLOPs of the samples consumed
        flops = consumed / run.global_batch_size * flops_per_iteration
    if progress_log:
        progress_log.resumed(flops)
    if ck.save and torch.distributed.get_rank() == 0:
        checkpoint.write_model_file(ck.save, config.model.to_json())
    adapter = (
        datasets.MegatronTokenizerAdapter(tokenizer) if tokenizer else datasets.MockTokenizer(config.model.vocab_size)
    )
    data_start = _data_start(run, progress)
    build_datasets = loss_mask_data.build_datasets if config.data.loss_mask_data else datasets.build_datasets
    train_ds, valid_ds, _, source_names = build_datasets(run, adapter, iteration)
    train_iter = _iterators(train_ds, data_start, config.optimizer.micro_batch_size, len(chunks))
    guard = callbacks.StabilityGuard(skip=log.skip_nonfinite_steps)
    logger = callbacks.Logger(run, world, torch.distributed.get_rank() == world - 1, guard)
    logger.arguments(iteration)
    forward_backward = get_forward_backward_func()
    forward_step = _forward_step_for(config)
    hooks = callbacks.RunHooks(config, config.ignored_flags + tuple(models.attention_notes(config.precision)))
    hooks.start()
    losses, step_times = [], []
    stop = callbacks.ExitCondition(
        ck.exit_signal_handler, ck.exit_duration_in_mins, ck.exit_interval, config.data.phase_transition_iterations
    )
    save = partial(_save, run, chunks=chunks, optimizer=optimizer, scheduler=scheduler, progress_log=progress_log)
    saved = None  # the iteration last saved
    try:
        while iteration < run.train_iters:
            hooks.before_step(iteration)
            num_zeros = None
            with callbacks.Timer() as timer:
                for c in chunks:
                    c.zero_grad_buffer()
                optimizer.zero_grad()
                reports = forward_backward(
                    forward_step_func=forward_step,
                    data_iterator=train_iter,
                    model=chunks,
                    num_microbatches=run.num_microbatches,
                    seq_length=config.model.seq_length,
                    micro_batch_size=config.optimizer.micro_batch_size,
                    forward_only=False,
                )
                loss_sum, loss_tokens = _reduce_totals(reports)["lm loss"]
                loss = loss_sum / max(loss_tokens, 1)
                grad_norm = None
                if not math.isfinite(loss):
                    guard.nonfinite("lm loss", loss, iteration + 1)
                else:
                    try:
                        updated, grad_norm, num_zeros = optimizer.step()
                    except callbacks.NonFiniteGradNorm as error:
                        grad_norm = error.value
                        guard.nonfinite("grad norm", grad_norm, iteration + 1)
                    else:
                        if updated:
                            scheduler.step(increment=run.global_batch_size)
                        else:
                            guard.skipped += 1
            iteration += 1
            consumed += run.global_batch_size
            flops += flops_per_iteration  # as Megatron-LM counts them: every iteration run, a skipped step too
            losses.append(loss)
            step_times.append(timer.elapsed)
            hooks.after_step(iteration)
            logger.training_step(
                iteration,
                consumed,
                loss,
                optimizer.param_groups[0]["lr"],
                grad_norm,
                timer.elapsed,
                optimizer.get_loss_scale().item(),
                params_norm=callbacks.params_norm(chunks) if log.log_params_norm else None,
                num_zeros=num_zeros if log.log_num_zeros_in_grad else None,
                loss_tokens=loss_tokens,
            )
            if log.eval_interval and iteration % log.eval_interval == 0 and valid_ds is not None:
                logger.validation(iteration, consumed, evaluate(run, chunks, valid_ds, source_names))
            if ck.save and ck.save_interval and iteration % ck.save_interval == 0:
                saved = save(iteration, consumed, flops)
            reason = stop.reason(iteration)
            if reason:
                if ck.save and saved != iteration:
                    saved = save(iteration, consumed, flops)
                where = f"checkpoint saved in {ck.save}" if ck.save else "no --save: nothing saved"
                _print(f"{reason}; stopped after iteration {iteration} of {run.train_iters}, {where}")
                break
        if ck.save and saved != iteration:
            save(iteration, consumed, flops)
    finally:
        stop.close()
        hooks.close()
        logger.close()
        if ck.save:
            checkpoint.close_save_dir(ck.save)
    return {"losses": losses, "step_times": step_times, "iteration": iteration, "chunks": chunks}


def _print(message: str) -> None:
    if torch.distributed.get_rank() == torch.distributed.get_world_size() - 1:
        print(message, flush=True)
