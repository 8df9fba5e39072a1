"""Run under torchrun: train with the given flags, then assert parameters are identical across DP replicas.
With SAVE_WEIGHTS_DIR set, finally write the trained weights as a weights-only checkpoint (checkpoint.save_weights,
the format the Hugging Face converter writes) at iteration SAVE_WEIGHTS_ITERATION."""

import os
import sys

import torch
from megatron.core import parallel_state

from megatron_ipt.training import checkpoint, loop, parallel
from tests.training.helpers import training_config

if __name__ == "__main__":
    cfg = training_config(sys.argv[1:])
    result = loop.train(cfg, cfg.data.tokenizer.build())
    group = parallel_state.get_data_parallel_group()
    for chunk in result["chunks"]:
        for name, param in chunk.module.named_parameters():
            copies = [torch.empty_like(param.data) for _ in range(torch.distributed.get_world_size(group))]
            torch.distributed.all_gather(copies, param.data.contiguous(), group=group)
            assert all(torch.equal(copies[0], c) for c in copies), f"{name} differs across DP replicas"
    if torch.distributed.get_rank() == 0:
        print(f"DP_PARAMS_IDENTICAL dp={torch.distributed.get_world_size(group)}", flush=True)
    if os.environ.get("SAVE_WEIGHTS_DIR"):
        checkpoint.save_weights(
            os.environ["SAVE_WEIGHTS_DIR"],
            [c.module for c in result["chunks"]],
            iteration=int(os.environ.get("SAVE_WEIGHTS_ITERATION", 0)),
        )
    parallel.destroy()
