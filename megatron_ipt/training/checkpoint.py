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
Common state and RNG are plain tensors/numbers/strings: megatron-core 0.19 reads its common state with
`torch.load(weights_only=True)` (compat.py), and every load here refuses a pickle that torch's weights-only loader
(or, for `.metadata`, our restricted unpickler) would not read (checkpoint_files.py).

Layout (Megatron-LM's): `<dir>/iter_0000100/` and `<dir>/latest_checkpointed_iteration.txt`. A save is written to
`iter_0000100.tmp/`, its files' sha256 listed in `checksums.sha256`, renamed once every rank has finished, and only
then is the marker replaced (temporary file + rename): a killed save never becomes "latest", and the next run with
`--save` repairs what it left (checkpoint_files.recover). A re-saved iteration replaces the old one without a moment
where the marker names a missing directory. One job at a time writes a `--save` directory (its lock file). Every
load verifies the checksums and the pickles first, and a corrupt or missing file is a TrainingInputError naming it.
The last `keep_last` checkpoints are kept (and always the marker's). Weights-only checkpoints (`save_weights`, e.g.
converted from Hugging Face) share the layout; `--load` of one starts the optimizer, scheduler and RNG afresh at the
marker's iteration.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import shutil
import time
from typing import List, Optional, Tuple

import numpy as np
import torch
from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
from megatron.core.dist_checkpointing.dict_utils import nested_values
from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor

from megatron_ipt.io.atomic import write_atomic, write_json_atomic
from megatron_ipt.training import checkpoint_files as files
from megatron_ipt.training import compat
from megatron_ipt.training.errors import TrainingInputError

MARKER = "latest_checkpointed_iteration.txt"
# The model a checkpoint directory holds, as a `--model` JSON file: written by tools/pretrain.py (with --save) and by
# tools/convert_checkpoint.py, so export and evaluation of a run need no model flags.
MODEL_FILE = "model.json"
META = "megatron_ipt"  # our block in the common state: kind, progress, layout, optimizer kind
# Test hook (tests/training/test_checkpoint.py): with this set to an iteration, every rank prints its pid and waits
# after writing that iteration's checkpoint and before committing it, so a test can SIGKILL the job mid-save. A
# waiting rank exits by itself once its launcher is gone (or after 10 minutes), so a failed test leaves no orphans.
STALL_ENV = "MEGATRON_IPT_TEST_STALL_BEFORE_COMMIT"


iteration_dir = files.iteration_dir


# Run progress a training checkpoint records besides the consumed samples: the global batch size (phase transitions
# need it unchanged), the --data-path blend as one string (a later phase names what it changed from) and the
# floating-point operations so far (Megatron-LM's num_floating_point_operations_so_far, for --log-progress).
PROGRESS_KEYS = ("global_batch_size", "data_path", "floating_point_operations")


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
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
        except OSError as error:
            raise TrainingInputError(f"--save {save_dir}: cannot create {tmp} ({error.strerror or error})") from None
    torch.distributed.barrier()
    return tmp


def _write(state: dict, tmp: str, iteration: int) -> None:
    """`dist_checkpointing.save`, a failed write (disk full, quota, permissions) as one TrainingInputError naming the
    directory; the half-written `tmp` is deleted (it was never committed, so it was never a checkpoint)."""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        dist_checkpointing.save(state, tmp)
    except (OSError, CheckpointException) as error:
        # megatron raises the writers' errors on its coordinator (rank 0) and a bare CheckpointException elsewhere
        causes = [f[0] for f in error.failures.values()] if isinstance(error, CheckpointException) else [error]
        for cause in list(causes):  # the writer processes' errors come back as the cause of a RuntimeError
            while cause.__cause__ is not None:
                cause = cause.__cause__
                causes.append(cause)
        oserror = next((c for c in causes if isinstance(c, OSError)), None)
        if oserror is not None:
            reason = oserror.strerror or str(oserror)
        elif causes:  # torch's zip writer reports a short write (a full disk) as a bare RuntimeError
            free = shutil.disk_usage(os.path.dirname(tmp)).free / 2**30
            reason = f"{str(causes[0]).splitlines()[0]} ({free:.1f} GiB free there: is the disk full?)"
        else:
            reason = "a write failed on another rank (see rank 0)"
        if torch.distributed.get_rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingInputError(f"cannot write checkpoint iteration {iteration} to {tmp}: {reason}") from None


def _commit(save_dir: str, iteration: int, keep_last: int) -> str:
    """Once every rank has written into the temporary directory: list its files' checksums, rename it in, then
    replace the marker (the commit, written last), then prune old checkpoints (checkpoint_files.publish)."""
    if os.environ.get(STALL_ENV) == str(iteration):
        _stall(iteration)
    final = iteration_dir(save_dir, iteration)
    tmp = final + ".tmp"
    torch.distributed.barrier()
    try:
        files.write_checksums(tmp)
    except OSError as error:
        raise TrainingInputError(f"cannot list the checksums of {tmp}: {error.strerror or error}") from None
    if torch.distributed.get_rank() == 0:
        try:
            files.publish(tmp, final, lambda: write_atomic(os.path.join(save_dir, MARKER), str(iteration)))
        except OSError as error:
            raise TrainingInputError(f"cannot commit checkpoint {final}: {error.strerror or error}") from None
        _prune(save_dir, keep_last, iteration)
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


def _prune(save_dir: str, keep_last: int, current: int) -> None:
    """Keep the last `keep_last` iterations, and always the one just committed (a rerun may save a lower one)."""
    done = files.committed_iterations(save_dir)
    keep = set(done[-keep_last:]) | {os.path.basename(iteration_dir(save_dir, current))}
    for old in done if keep_last > 0 else []:
        if old not in keep:
            shutil.rmtree(os.path.join(save_dir, old), ignore_errors=True)


def open_save_dir(save_dir: str) -> List[str]:
    """As a run with `--save` starts, on every rank: rank 0 takes the directory's lock (one job per directory; a
    dead owner's lock is taken over) and, holding it, repairs what killed saves left (checkpoint_files.recover).
    Returns the lines to print; raises TrainingInputError on every rank if the directory is another job's."""
    outcome = [None]
    if torch.distributed.get_rank() == 0:
        try:
            note = files.acquire_lock(save_dir)
            outcome[0] = ([note] if note else []) + files.recover(save_dir)
        except TrainingInputError as error:
            outcome[0] = error
        except OSError as error:
            outcome[0] = TrainingInputError(f"--save {save_dir}: {error.strerror or error}: {error.filename}")
    torch.distributed.broadcast_object_list(outcome, src=0)
    if isinstance(outcome[0], TrainingInputError):
        raise outcome[0]
    return outcome[0]


def close_save_dir(save_dir: str) -> None:
    """Give the directory's lock back (rank 0; a no-op elsewhere, and if the lock is no longer ours)."""
    if torch.distributed.is_initialized() and torch.distributed.get_rank() == 0:
        files.release_lock(save_dir)


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
            # what a later job compares (phase transitions, --log-progress); absent from older checkpoints
            **{key: progress[key] for key in PROGRESS_KEYS if progress.get(key) is not None},
            "layout": _layout(),
            "optimizer": _optimizer_kind(optimizer),
            "precision": _precision([c.module for c in chunks]),
        },
    }
    _write(state, tmp, iteration)
    return _commit(save_dir, iteration, keep_last)


def save_weights(save_dir: str, modules, iteration: int = 0, keep_last: int = 0) -> str:
    """A weights-only checkpoint (e.g. converted from Hugging Face) in the same layout: `--load` reads it like any
    other (optimizer, scheduler and RNG start fresh). `modules` are unwrapped GPTModel chunks."""
    tmp = _begin(save_dir, iteration)
    _write({"model": _model_state(modules), META: {"kind": "weights", "iteration": iteration}}, tmp, iteration)
    return _commit(save_dir, iteration, keep_last)


def latest_iteration(load_dir: str) -> Optional[int]:
    """The iteration the marker names, None without a marker; TrainingInputError if it cannot be read."""
    path = os.path.join(load_dir, MARKER)
    text = files.read_text(path, "it")
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit():
        raise TrainingInputError(f"{path}: line 1 is {text[:40]!r}, expected an iteration number")
    return int(text)


def latest_checkpoint(load_dir: str) -> Tuple[Optional[int], Optional[str]]:
    """(iteration, directory) of the latest committed checkpoint in `load_dir`, or (None, None) without a marker.
    The directory is `iter_N/`, or `iter_N.old/` while a re-save of N is being published (checkpoint_files)."""
    iteration = latest_iteration(load_dir)
    if iteration is None:
        return None, None
    directory = files.resolve(load_dir, iteration)
    if directory is None:
        raise TrainingInputError(
            f"{os.path.join(load_dir, MARKER)} names iteration {iteration}, but "
            f"{iteration_dir(load_dir, iteration)} does not exist"
        )
    return iteration, directory


def check_load_dir(load_dir: str, save_dir: Optional[str]) -> Optional[str]:
    """The `--load` rule: a directory (with or without a checkpoint in it), or, when it is also `--save`, a path
    that does not exist yet (a job's first run). Anything else is a TrainingInputError, not a silent fresh start.
    Returns the line to print when there is no checkpoint to load ('starting from iteration 0'), else None."""
    same = save_dir is not None and os.path.abspath(load_dir) == os.path.abspath(save_dir)
    if os.path.isdir(load_dir):
        if latest_iteration(load_dir) is None:
            return f"no checkpoint in {load_dir} yet: starting from iteration 0"
        return None
    if os.path.exists(load_dir):
        raise TrainingInputError(f"--load {load_dir}: is a file, not a checkpoint directory")
    if same:
        return f"no checkpoint in {load_dir} yet: starting from iteration 0"
    raise TrainingInputError(
        f"--load {load_dir}: no such directory (to start from scratch, leave --load out, or give it the --save path)"
    )


@contextlib.contextmanager
def _reading(directory: str):
    """megatron's and torch's load errors about the checkpoint's files (a missing or unreadable shard, a corrupt
    item) as one TrainingInputError naming the file. torch's CheckpointException (a BaseException) carries the
    ranks' errors."""
    from megatron.core.dist_checkpointing.core import CheckpointingException
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        yield
    except CheckpointException as error:
        causes = [f[0] for f in error.failures.values()]
        cause = next((c for c in causes if isinstance(c, (OSError, pickle.UnpicklingError, EOFError))), None)
        if cause is None:
            raise
        raise _read_error(directory, cause) from None
    except (OSError, pickle.UnpicklingError, EOFError, CheckpointingException) as error:
        raise _read_error(directory, error) from None


def _read_error(directory: str, error: BaseException) -> TrainingInputError:
    if isinstance(error, OSError) and error.filename:
        return TrainingInputError(f"{error.filename}: cannot read it ({error.strerror or error})")
    return TrainingInputError(f"{directory}: cannot load the checkpoint ({str(error).splitlines()[0]})")


def _latest(load_dir: str):
    """(iteration, directory, our metadata) of the latest committed checkpoint, its files verified (checksums, and
    no pickle that could run code: checkpoint_files.verify, on every rank together); (None, None, None) if none."""
    iteration, directory = latest_checkpoint(load_dir)
    if iteration is None:
        return None, None, None
    files.verify(directory)
    with _reading(directory):
        common = compat.load_common_state(directory)
    return iteration, directory, common.get(META) or {"kind": "weights"}


def tensors_metadata(directory: str) -> dict:
    """`dist_checkpointing.load_tensors_metadata` of a checkpoint directory, once its files are verified."""
    files.verify(directory)
    with _reading(directory):
        return dist_checkpointing.load_tensors_metadata(directory)


# Model fields that change no tensor's shape: a difference in them is no reason to refuse a checkpoint.
_SHAPELESS_MODEL_FIELDS = frozenset(
    ("seq_length", "attention_dropout", "hidden_dropout", "rotary_base", "rotary_percent", "use_rope_scaling")
    + ("rope_scaling_factor", "norm_epsilon", "apply_layernorm_1p", "hf_config")
)


def _check_model_fits(load_dir: str, directory: str, model_state, model_now: Optional[dict]) -> None:
    """Every tensor of this run's model is in the checkpoint with the same global shape, checked from the saved
    metadata before megatron-core's load (which fails deep inside with a shape error). Otherwise one
    TrainingInputError naming the model flags that differ from the checkpoint's model.json (when it has one and
    `model_now` is given), or the first tensor that does not fit."""
    with _reading(directory):
        saved = dist_checkpointing.load_tensors_metadata(directory)
    misfits = []
    for item in nested_values(model_state):
        if not isinstance(item, ShardedTensor):
            continue
        there = saved.get(item.key)
        # The vocabulary rows may differ (megatron-core marks the embedding and output layer allow_shape_mismatch
        # and loads the shared rows: an unpadded vocabulary saved by the converter, or one padded for another TP).
        compared = slice(1, None) if item.allow_shape_mismatch else slice(None)
        if there is None:
            misfits.append(f"this model's {item.key} is not in it")
        elif tuple(there.global_shape)[compared] != tuple(item.global_shape)[compared]:
            misfits.append(f"{item.key} is {list(there.global_shape)} there, {list(item.global_shape)} here")
    if not misfits:
        return
    flags = _differing_model_flags(load_dir, model_now)
    raise TrainingInputError(
        f"--load {load_dir}: the checkpoint holds another model ("
        + ("; ".join(flags) if flags else misfits[0])
        + "): give the model flags it was saved with (its model.json), or --model with that file"
    )


def _differing_model_flags(load_dir: str, model_now: Optional[dict]) -> List[str]:
    """`--flag VALUE there, VALUE here` for each shape-changing model field that differs from `load_dir/model.json`."""
    path = os.path.join(load_dir, MODEL_FILE)
    if model_now is None or not os.path.isfile(path):
        return []
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return []  # the tensor shapes still say what does not fit
    learned = model_now.get("position_embedding_type") == "learned_absolute"
    return [
        f"--{name.replace('_', '-')} {saved[name]} there, {value} here"
        for name, value in model_now.items()
        if name in saved
        and saved[name] != value
        and name not in _SHAPELESS_MODEL_FIELDS
        and (name != "max_position_embeddings" or learned)
    ]


def load_weights(load_dir: str, modules) -> Optional[int]:
    """Load only the model weights of the latest committed checkpoint (any TP/PP layout) into unwrapped chunks.
    Returns its iteration, or None when there is no checkpoint."""
    iteration, directory, _ = _latest(load_dir)
    if iteration is None:
        return None
    model = _model_state(modules)
    _check_model_fits(load_dir, directory, model, None)
    with _reading(directory):
        loaded = dist_checkpointing.load({"model": model}, directory)
    _load_model_state(modules, loaded["model"])
    return iteration


def load(
    load_dir: str,
    chunks,
    optimizer,
    scheduler,
    load_optim: bool = True,
    load_rng: bool = True,
    model_json: Optional[dict] = None,
    check_progress=None,
) -> Optional[dict]:
    """Load the latest committed checkpoint into a run being set up (any TP/PP/DP layout; see the module doc).
    `model_json`: this run's model fields, to name the flags that differ when the checkpoint holds another model.
    `check_progress`: called with the checkpoint's metadata (iteration, consumed samples, PROGRESS_KEYS) before the
    load, to refuse a checkpoint this run cannot continue.
    Returns {'iteration', 'consumed_samples', 'notes': [what was not restored, and why], and PROGRESS_KEYS (None where
    the checkpoint has not recorded them)}, or None if there is none."""
    iteration, directory, meta = _latest(load_dir)
    if iteration is None:
        return None
    if check_progress is not None:  # the run's own conditions on the checkpoint, before anything is read into it
        check_progress(meta)
    modules = [c.module for c in chunks]
    model = _model_state(modules)
    _check_model_fits(load_dir, directory, model, model_json)
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
    with _reading(directory):
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
    return {
        "iteration": iteration,
        "consumed_samples": meta.get("consumed_samples", 0),
        "notes": notes,
        **{key: meta.get(key) for key in PROGRESS_KEYS},
    }
