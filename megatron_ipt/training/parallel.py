"""Process groups and seeds, set up in one place."""

from __future__ import annotations

import datetime
import os
import random

import numpy as np
import torch
from megatron.core import parallel_state, tensor_parallel

from megatron_ipt.training.config import ParallelConfig


def initialize(config: ParallelConfig, num_layers: int, seed: int) -> None:
    """init_process_group (gloo on CPU, nccl on GPU), megatron model-parallel groups, and seeds."""
    from megatron_ipt.training import compat

    compat.quiet_internal_deprecations()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    else:
        from megatron_ipt.training import cpu

        cpu.apply()
    backend = config.distributed_backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend=backend,
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            rank=int(os.environ.get("RANK", 0)),
            timeout=datetime.timedelta(minutes=config.distributed_timeout_minutes),
        )
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=config.tensor_model_parallel_size,
        pipeline_model_parallel_size=config.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=config.virtual_pipeline_model_parallel_size(num_layers),
        context_parallel_size=config.context_parallel_size,
    )
    set_seed(seed)


def device() -> torch.device:
    """This rank's device: its GPU (set by `initialize`), or the CPU where CUDA is absent. Tensors that go through a
    collective must live there: NCCL reduces CUDA tensors only."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def set_seed(seed: int) -> None:
    # Megatron: a different seed per pipeline stage; TP ranks get their own stream through the RNG tracker.
    seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)


def destroy() -> None:
    parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
