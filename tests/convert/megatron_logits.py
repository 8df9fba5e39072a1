"""Run under torchrun: for each layout TPxPP (e.g. 1x1,2x1,1x2; ranks beyond TP*PP are data parallel), load each
converted checkpoint, write its logits on the tokens (gathered over TP; PP=1 layouts only) to
CKPT/logits_tp{TP}_pp{PP}.pt and, when RESAVE is set, save the weights again from that layout to
CKPT/resaved_tp{TP}_pp{PP}/.

usage: torchrun --nproc-per-node N megatron_logits.py TOKENS.pt LAYOUTS CKPT_DIR...
"""

import os
import sys

import torch
from megatron.core import parallel_state

from megatron_ipt.training import checkpoint, models, parallel
from megatron_ipt.training.config import ParallelConfig, PrecisionConfig
from megatron_ipt.training.model_config import ModelConfig


def logits_of(model, tokens):
    tokens = tokens.to(next(model.parameters()).device)  # the GPU on CUDA
    positions = torch.arange(tokens.shape[1]).unsqueeze(0).expand_as(tokens)
    with torch.no_grad():
        local = model(tokens, positions, None)  # [b, s, vocab / TP]; the causal mask comes from the layer spec
    group = parallel_state.get_tensor_model_parallel_group()
    parts = [torch.empty_like(local) for _ in range(torch.distributed.get_world_size(group))]
    torch.distributed.all_gather(parts, local.contiguous(), group=group)
    return torch.cat(parts, dim=-1)


if __name__ == "__main__":
    tokens_file, layouts, *directories = sys.argv[1:]
    tokens = torch.load(tokens_file)
    for layout in layouts.split(","):
        tp, pp = layout.split("x")
        for directory in directories:
            chunks, _ = models.build(
                ModelConfig.load(os.path.join(directory, "model.json")),
                ParallelConfig(tensor_model_parallel_size=int(tp), pipeline_model_parallel_size=int(pp)),
                PrecisionConfig(),
            )
            checkpoint.load_weights(directory, chunks)
            if pp == "1":
                logits = logits_of(chunks[0], tokens)
                if torch.distributed.get_rank() == 0:
                    torch.save(logits.cpu(), os.path.join(directory, f"logits_tp{tp}_pp{pp}.pt"))
            if os.environ.get("RESAVE"):
                checkpoint.save_weights(os.path.join(directory, f"resaved_tp{tp}_pp{pp}"), chunks)
            parallel_state.destroy_model_parallel()
    parallel.destroy()
