"""Atomic, sharded checkpoints: megatron.core.dist_checkpointing for the model (reshardable across TP/PP), plus
per-rank optimizer, scheduler, RNG and progress state.

Layout (Megatron's): `<save>/iter_0000100/` and `<save>/latest_checkpointed_iteration.txt`. A save is written to
`iter_0000100.tmp/`, renamed once every rank has finished, and only then is the marker replaced (temp + rename),
so a killed save never becomes "latest". The last `keep_last` checkpoints are kept.
"""
from __future__ import annotations

import os
import random
import shutil
from typing import Optional

import numpy as np
import torch
from megatron.core import dist_checkpointing, parallel_state, tensor_parallel

MARKER = "latest_checkpointed_iteration.txt"


def _rank_file(directory: str) -> str:
    return os.path.join(directory, f"state_rank{torch.distributed.get_rank():05d}.pt")


def _model_state(chunks):
    if len(chunks) == 1:
        return chunks[0].sharded_state_dict()
    return {f"model{i}": c.sharded_state_dict() for i, c in enumerate(chunks)}


def _torch_optimizers(optimizer):
    """The torch optimizers inside a MegatronOptimizer. Their per-rank state (for the distributed optimizer: this
    DP rank's fp32 shards and Adam moments) is exactly what an exact resume at the same layout needs."""
    chained = getattr(optimizer, "chained_optimizers", None)
    return [o.optimizer for o in chained] if chained else [optimizer.optimizer]


def _begin(save_dir: str, iteration: int) -> str:
    """Create the temporary directory of a save on rank 0; every rank gets its path."""
    tmp = os.path.join(save_dir, f"iter_{iteration:07d}") + ".tmp"
    if torch.distributed.get_rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    torch.distributed.barrier()
    return tmp


def _commit(save_dir: str, iteration: int, keep_last: int) -> str:
    """Once every rank has written into the temporary directory: rename it, then replace the marker (the commit,
    written last), then prune old checkpoints."""
    final = os.path.join(save_dir, f"iter_{iteration:07d}")
    torch.distributed.barrier()
    if torch.distributed.get_rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(final + ".tmp", final)
        marker_tmp = os.path.join(save_dir, MARKER + ".tmp")
        with open(marker_tmp, "w") as f:
            f.write(str(iteration))
            f.flush()
            os.fsync(f.fileno())
        os.replace(marker_tmp, os.path.join(save_dir, MARKER))
        _prune(save_dir, keep_last)
    torch.distributed.barrier()
    return final


def save_weights(save_dir: str, modules, iteration: int = 0, keep_last: int = 0) -> str:
    """A weights-only checkpoint (e.g. converted from Hugging Face) in the same layout: `--load` reads it like any
    other (optimizer, scheduler and RNG start fresh). `modules` are unwrapped GPTModel chunks."""
    tmp = _begin(save_dir, iteration)
    dist_checkpointing.save(_model_state(modules), tmp)
    return _commit(save_dir, iteration, keep_last)


def load_weights(load_dir: str, modules) -> Optional[int]:
    """Load only the model weights of the latest committed checkpoint (any TP/PP layout) into unwrapped chunks.
    Returns its iteration, or None when there is no checkpoint."""
    iteration = latest_iteration(load_dir)
    if iteration is None:
        return None
    directory = os.path.join(load_dir, f"iter_{iteration:07d}")
    loaded = dist_checkpointing.load(_model_state(modules), directory)
    if len(modules) == 1:
        modules[0].load_state_dict(loaded)
    else:
        for i, m in enumerate(modules):
            m.load_state_dict(loaded[f"model{i}"])
    return iteration


def save(save_dir: str, iteration: int, chunks, optimizer, scheduler, progress: dict, keep_last: int = 3) -> str:
    tmp = _begin(save_dir, iteration)
    modules = [c.module for c in chunks]  # unwrap DDP
    dist_checkpointing.save(_model_state(modules), tmp)
    state = {
        "iteration": iteration, "progress": progress,
        "optimizer": [inner.state_dict() for inner in _torch_optimizers(optimizer)],
        "scheduler": scheduler.state_dict(),
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "tracker": tensor_parallel.get_cuda_rng_tracker().get_states()},
        "parallel": {"tp": parallel_state.get_tensor_model_parallel_world_size(),
                     "pp": parallel_state.get_pipeline_model_parallel_world_size(),
                     "world": torch.distributed.get_world_size()},
    }
    torch.save(state, _rank_file(tmp))
    return _commit(save_dir, iteration, keep_last)


def _prune(save_dir: str, keep_last: int) -> None:
    done = sorted(d for d in os.listdir(save_dir) if d.startswith("iter_") and not d.endswith(".tmp"))
    for old in done[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(os.path.join(save_dir, old), ignore_errors=True)


def latest_iteration(load_dir: str) -> Optional[int]:
    path = os.path.join(load_dir, MARKER)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read().strip()
    if not text.isdigit():
        raise ValueError(f"{path}: line 1 is {text!r}, expected an iteration number")
    return int(text)


def load(load_dir: str, chunks, optimizer, scheduler, load_optim: bool = True, load_rng: bool = True) -> Optional[dict]:
    """Load the latest committed checkpoint into the model (any TP/PP), and optimizer/RNG state when the
    parallel layout matches. Returns the saved progress dict, or None if there is no checkpoint."""
    iteration = load_weights(load_dir, [c.module for c in chunks])
    if iteration is None:
        return None
    directory = os.path.join(load_dir, f"iter_{iteration:07d}")
    rank_file = _rank_file(directory)
    same_layout = False
    state = None
    if os.path.exists(rank_file):
        state = torch.load(rank_file, weights_only=False)
        p = state["parallel"]
        same_layout = (p["tp"], p["pp"], p["world"]) == (parallel_state.get_tensor_model_parallel_world_size(),
                                                          parallel_state.get_pipeline_model_parallel_world_size(),
                                                          torch.distributed.get_world_size())
    # Copy the loaded weights into the optimizer's fp32 main params (the distributed optimizer keeps shards).
    optimizer.reload_model_params()
    if same_layout and load_optim:
        for inner, inner_state in zip(_torch_optimizers(optimizer), state["optimizer"]):
            inner.load_state_dict(inner_state)
        scheduler.load_state_dict(state["scheduler"])
    if state is not None and not same_layout and torch.distributed.get_rank() == 0:
        print(f"{directory}: saved at {state['parallel']}; loading the weights resharded, optimizer moments, "
              f"scheduler and RNG start fresh", flush=True)
    if same_layout and load_rng:
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        tensor_parallel.get_cuda_rng_tracker().set_states(rng["tracker"])
    progress = dict(state["progress"]) if state else {"iteration": iteration, "consumed_samples": 0}
    return progress
