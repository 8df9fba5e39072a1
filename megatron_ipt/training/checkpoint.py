"""Atomic, sharded checkpoints on megatron.core.dist_checkpointing, reshardable in every part.

What one training checkpoint holds, and how it moves to another parallel layout:
- model weights: the model's sharded state dict (loads at any TP / PP / virtual-pipeline layout);
- optimizer: megatron's `optimizer.sharded_state_dict(model_sharded_state_dict)`. The local (non-distributed)
  optimizer's fp32 copies and Adam moments are ShardedTensors shaped and sharded like their parameters. The
  distributed optimizer is saved as 'fully_reshardable': each parameter's fp32 copy and moments in model space too.
  Both therefore load at any TP, PP and DP. Why that type: megatron-core 0.16.1-0.19 offer 'dp_reshardable' (its
  internal bucket layout: only DP may change; Megatron-LM's default), 'fully_reshardable' (anything may change;
  Megatron-LM's --dist-ckpt-optim-fully-reshardable), 'dp_zero_gather_scatter' (fixed TP x PP, deprecated) and
  'fully_sharded_model_space' (deprecated; dist_checkpointing itself rejects its flattened shards in both releases).
  The price of 'fully_reshardable' is a gather of each TP x PP shard's optimizer state over its DP group at save
  time (into host memory; --distrib-optim-fully-reshardable-mem-efficient gathers on DP rank 0 only, over gloo).
  The optimizer kind must match at load (the two store different fp32 copies), and for the local optimizer also
  whether the model is fp32 or 16-bit (only then does it keep fp32 copies); --no-load-optim starts fresh;
- LR scheduler, iteration and consumed samples: common state (one copy, written by rank 0);
- RNG (python, numpy, torch, CUDA and megatron's tracker): one ShardedObject per rank, restored only when TP, PP and
  DP are unchanged: a rank's generator has no counterpart at another layout, so then it is seeded afresh (said so).
Common state and RNG are plain tensors/numbers/strings, since megatron-core 0.19 reads them with
`torch.load(weights_only=True)` (compat.py).

Layout (Megatron-LM's): `<dir>/iter_0000100/` and `<dir>/latest_checkpointed_iteration.txt`. A save is written to
`iter_0000100.tmp/`, renamed once every rank has finished, and only then is the marker replaced (temporary file +
rename): a killed save never becomes "latest", and the next run with `--save` deletes the leftover `*.tmp`.
The last `keep_last` checkpoints are kept. Weights-only checkpoints (`save_weights`, e.g. converted from Hugging
Face) share the layout; `--load` of one starts the optimizer, scheduler and RNG afresh at the marker's iteration.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from typing import List, Optional

import numpy as np
import torch
from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
from megatron.core.dist_checkpointing.mapping import ShardedObject

from megatron_ipt.io.atomic import write_atomic, write_json_atomic
from megatron_ipt.training import compat

MARKER = "latest_checkpointed_iteration.txt"
# The model a checkpoint directory holds, as a `--model` JSON file: written by tools/pretrain.py (with --save) and by
# tools/convert_checkpoint.py, so export and evaluation of a run need no model flags.
MODEL_FILE = "model.json"
META = "megatron_ipt"  # our block in the common state: kind, progress, layout, optimizer kind
# Test hook (tests/training/test_checkpoint.py): with this set to an iteration, every rank prints its pid and waits
# after writing that iteration's checkpoint and before committing it, so a test can SIGKILL the job mid-save. A
# waiting rank exits by itself once its launcher is gone (or after 10 minutes), so a failed test leaves no orphans.
STALL_ENV = "MEGATRON_IPT_TEST_STALL_BEFORE_COMMIT"


def iteration_dir(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


def _model_state(modules):
    if len(modules) == 1:
        return modules[0].sharded_state_dict()
    return {f"model{i}": m.sharded_state_dict() for i, m in enumerate(modules)}


def _load_model_state(modules, loaded) -> None:
    if len(modules) == 1:
        modules[0].load_state_dict(loaded)
    else:
        for i, m in enumerate(modules):
            m.load_state_dict(loaded[f"model{i}"])


def _layout() -> dict:
    return {
        "tp": parallel_state.get_tensor_model_parallel_world_size(),
        "pp": parallel_state.get_pipeline_model_parallel_world_size(),
        "dp": parallel_state.get_data_parallel_world_size(),
    }


def _optimizer_kind(optimizer) -> str:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    inner = getattr(optimizer, "chained_optimizers", [optimizer])
    return "distributed" if any(isinstance(o, DistributedOptimizer) for o in inner) else "local"


def _prepare_torch_adam_for_load(optimizer) -> None:
    """Three gaps in megatron-core's distributed-optimizer load path (0.16.1 to 0.19) when it wraps torch's AdamW, as
    it does without Transformer Engine or apex (always on CPU); TE's and apex's FusedAdam keep no per-parameter
    'step'. (1) `DistributedOptimizer.state_dict()`, called first by `sharded_state_dict(is_loading=True)`, asserts
    one per-parameter 'step', which torch creates only at its first step: give a fresh optimizer zero moments at
    step 0 (the load overwrites them). (2) The 'fully_reshardable' load copies every tensor of a parameter's state
    from the checkpoint, 'step' included, though its reader skips 'step' (the step travels in the param groups and is
    already set): hand the parameter's own 'step' back, a copy onto itself. (3) `load_state_dict` sets that step as
    one tensor shared by every parameter, which torch then increments once per parameter at each step, skewing
    Adam's bias correction: `_unshare_adam_steps` gives each parameter its own copy after the load."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        if not isinstance(inner, DistributedOptimizer) or inner.optimizer is None:
            continue
        if not inner.optimizer.state:
            inner.init_state_fn(inner.optimizer, inner.config)
            for param_state in inner.optimizer.state.values():
                param_state.setdefault("step", torch.tensor(0.0))
        if "_set_main_param_and_optimizer_states" not in vars(inner):
            inner._set_main_param_and_optimizer_states = _keep_step(inner)


def _keep_step(inner):
    set_states = inner._set_main_param_and_optimizer_states

    def set_main_param_and_optimizer_states(model_param, tensors):
        group_index, group_order = inner.model_param_group_index_map[model_param]
        state = inner.optimizer.state[inner.optimizer.param_groups[group_index]["params"][group_order]]
        if "step" in state and "step" not in tensors:
            tensors = {**tensors, "step": state["step"]}
        set_states(model_param, tensors)

    return set_main_param_and_optimizer_states


def _unshare_adam_steps(optimizer) -> None:
    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        for param_state in inner.optimizer.state.values() if inner.optimizer is not None else []:
            if isinstance(param_state.get("step"), torch.Tensor):
                param_state["step"] = param_state["step"].clone()


def _optimizer_metadata(mem_efficient: bool) -> dict:
    return {
        "distrib_optim_sharding_type": "fully_reshardable",
        "distrib_optim_fully_reshardable_mem_efficient": mem_efficient,
        "chained_optim_avoid_prefix": True,
    }


def _precision(modules) -> str:
    """The dtype of the model's parameters: 'float32', 'bfloat16' or 'float16'."""
    return str(next(modules[0].parameters()).dtype).removeprefix("torch.")


def _rng_object(data) -> ShardedObject:
    """This rank's RNG state as one shard of a (PP, TP, DP) grid of objects."""
    layout = _layout()
    offset = (
        parallel_state.get_pipeline_model_parallel_rank(),
        parallel_state.get_tensor_model_parallel_rank(),
        parallel_state.get_data_parallel_rank(),
    )
    return ShardedObject("rng_state", data, (layout["pp"], layout["tp"], layout["dp"]), offset, replica_id=0)


def _rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def write_model_file(save_dir: str, model: dict) -> str:
    """`<save_dir>/model.json` (model fields, and the source Hugging Face config for converted models), atomically."""
    return write_json_atomic(os.path.join(save_dir, MODEL_FILE), model)


def _is_last_rank() -> bool:
    return torch.distributed.get_rank() == torch.distributed.get_world_size() - 1


def _begin(save_dir: str, iteration: int) -> str:
    """Create the temporary directory of a save on rank 0; every rank gets its path."""
    tmp = iteration_dir(save_dir, iteration) + ".tmp"
    if torch.distributed.get_rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    torch.distributed.barrier()
    return tmp


def _commit(save_dir: str, iteration: int, keep_last: int) -> str:
    """Once every rank has written into the temporary directory: rename it, then replace the marker (the commit,
    written last), then prune old checkpoints."""
    if os.environ.get(STALL_ENV) == str(iteration):
        _stall(iteration)
    final = iteration_dir(save_dir, iteration)
    torch.distributed.barrier()
    if torch.distributed.get_rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(final + ".tmp", final)
        write_atomic(os.path.join(save_dir, MARKER), str(iteration))
        _prune(save_dir, keep_last)
    torch.distributed.barrier()
    return final


def _stall(iteration: int) -> None:
    print(f"checkpoint {iteration} written, not committed: stalling, pid {os.getpid()} ({STALL_ENV})", flush=True)
    launcher, deadline = os.getppid(), time.monotonic() + 600
    while os.getppid() == launcher and time.monotonic() < deadline:
        time.sleep(0.1)
    import psutil

    for child in psutil.Process().children(recursive=True):  # dist_checkpointing's writer processes
        child.kill()
    os._exit(1)


def _prune(save_dir: str, keep_last: int) -> None:
    done = sorted(d for d in os.listdir(save_dir) if d.startswith("iter_") and not d.endswith(".tmp"))
    for old in done[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(os.path.join(save_dir, old), ignore_errors=True)


def remove_incomplete(save_dir: str) -> List[str]:
    """Delete the `*.tmp` directories (and marker temp file) that a killed save left in `save_dir`; on rank 0, as a
    run starts, before it saves anything. Returns the names removed, on every rank."""
    removed = [[]]
    if torch.distributed.get_rank() == 0 and os.path.isdir(save_dir):
        for name in sorted(os.listdir(save_dir)):
            if name.endswith(".tmp"):
                path = os.path.join(save_dir, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                removed[0].append(name)
    torch.distributed.broadcast_object_list(removed, src=0)
    return removed[0]


def save(
    save_dir: str,
    iteration: int,
    chunks,
    optimizer,
    scheduler,
    progress: dict,
    keep_last: int = 3,
    mem_efficient: bool = False,
) -> str:
    """Everything a run needs to continue, at any layout (see the module doc). `chunks` are the DDP-wrapped models."""
    tmp = _begin(save_dir, iteration)
    model = _model_state([c.module for c in chunks])
    state = {
        "model": model,
        "optimizer": optimizer.sharded_state_dict(model, metadata=_optimizer_metadata(mem_efficient)),
        "scheduler": scheduler.state_dict(),
        "rng_state": _rng_object(_rng_state()),
        META: {
            "kind": "training",
            "iteration": iteration,
            "consumed_samples": progress["consumed_samples"],
            "layout": _layout(),
            "optimizer": _optimizer_kind(optimizer),
            "precision": _precision([c.module for c in chunks]),
        },
    }
    dist_checkpointing.save(state, tmp)
    return _commit(save_dir, iteration, keep_last)


def save_weights(save_dir: str, modules, iteration: int = 0, keep_last: int = 0) -> str:
    """A weights-only checkpoint (e.g. converted from Hugging Face) in the same layout: `--load` reads it like any
    other (optimizer, scheduler and RNG start fresh). `modules` are unwrapped GPTModel chunks."""
    tmp = _begin(save_dir, iteration)
    dist_checkpointing.save({"model": _model_state(modules), META: {"kind": "weights", "iteration": iteration}}, tmp)
    return _commit(save_dir, iteration, keep_last)


def latest_iteration(load_dir: str) -> Optional[int]:
    path = os.path.join(load_dir, MARKER)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read().strip()
    if not text.isdigit():
        raise ValueError(f"{path}: line 1 is {text!r}, expected an iteration number")
    return int(text)


def _latest(load_dir: str):
    """(iteration, directory, our metadata) of the latest committed checkpoint; (None, None, None) if there is none."""
    iteration = latest_iteration(load_dir)
    if iteration is None:
        return None, None, None
    directory = iteration_dir(load_dir, iteration)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"{os.path.join(load_dir, MARKER)} names iteration {iteration}, but {directory} does not exist"
        )
    return iteration, directory, compat.load_common_state(directory).get(META) or {"kind": "weights"}


def load_weights(load_dir: str, modules) -> Optional[int]:
    """Load only the model weights of the latest committed checkpoint (any TP/PP layout) into unwrapped chunks.
    Returns its iteration, or None when there is no checkpoint."""
    iteration, directory, _ = _latest(load_dir)
    if iteration is None:
        return None
    loaded = dist_checkpointing.load({"model": _model_state(modules)}, directory)
    _load_model_state(modules, loaded["model"])
    return iteration


def load(load_dir: str, chunks, optimizer, scheduler, load_optim: bool = True, load_rng: bool = True) -> Optional[dict]:
    """Load the latest committed checkpoint into a run being set up (any TP/PP/DP layout; see the module doc).
    Returns {'iteration', 'consumed_samples', 'notes': [what was not restored, and why]}, or None if there is none."""
    iteration, directory, meta = _latest(load_dir)
    if iteration is None:
        return None
    modules = [c.module for c in chunks]
    model = _model_state(modules)
    request = {"model": model}
    notes = []
    training = meta["kind"] == "training"
    if not training:
        notes.append("weights-only checkpoint: optimizer, scheduler and RNG start fresh")
    elif not load_optim:
        notes.append("--no-load-optim: optimizer and scheduler start fresh")
    else:
        if meta["optimizer"] != _optimizer_kind(optimizer):
            raise SystemExit(
                f"{directory} holds the state of the {meta['optimizer']} optimizer, but this run uses the "
                f"{_optimizer_kind(optimizer)} one (--use-distributed-optimizer); their states do not "
                f"convert: keep the flag as it was, or pass --no-load-optim to start the optimizer fresh"
            )
        saved, now = meta.get("precision"), _precision(modules)  # None: saved before we recorded it
        if _optimizer_kind(optimizer) == "local" and saved and (saved == "float32") != (now == "float32"):
            raise SystemExit(
                f"{directory} holds the local optimizer's state of a {saved} model, but this run's model is {now}: "
                f"that optimizer keeps fp32 copies of the weights only for 16-bit models, so its states do not "
                f"convert: keep --bf16/--fp16 as they were, or pass --no-load-optim to start the optimizer fresh"
            )
        _prepare_torch_adam_for_load(optimizer)
        request["optimizer"] = optimizer.sharded_state_dict(model, is_loading=True, metadata=_optimizer_metadata(False))
    if training and load_rng:
        if meta["layout"] == _layout():
            request["rng_state"] = _rng_object(None)
        else:
            notes.append(
                f"saved at {meta['layout']}, now {_layout()}: RNG seeded afresh (per-rank generators do not reshard)"
            )
    loaded = dist_checkpointing.load(request, directory)
    _load_model_state(modules, loaded["model"])
    if "optimizer" in request:
        optimizer.load_state_dict(loaded["optimizer"])  # also the fp32 main copies of the weights
        _unshare_adam_steps(optimizer)
        try:
            scheduler.load_state_dict(loaded["scheduler"])
        except AssertionError as error:  # megatron's check that the schedule flags match the checkpoint's
            raise SystemExit(
                f"{directory}: {error}; pass --override-opt_param-scheduler to follow this run's flags "
                f"or --use-checkpoint-opt_param-scheduler to follow the checkpoint"
            ) from None
    else:
        optimizer.reload_model_params()  # the fp32 main copies (distributed optimizer: its shards) from the weights
    if "rng_state" in request:
        _set_rng_state(loaded["rng_state"])
    return {"iteration": iteration, "consumed_samples": meta.get("consumed_samples", 0), "notes": notes}
