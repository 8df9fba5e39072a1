"""Run under torchrun: train with faults injected, to test the non-finite loss and grad-norm guards.

FAULT_NAN_GRAD_AT=k: the backward pass of iteration k yields NaN gradients while its loss stays finite (an autograd
function on the model output: identity forward, NaN backward). FAULT_NAN_LOSS_AT=k: iteration k's loss is NaN.
Afterwards, on every rank: no parameter is NaN and Adam's step count shows no poisoned step was applied. When the run
stopped (the default), the driver then lets megatron-core's own `optimizer.step()` run unguarded on the same
gradients, to show it would have applied the update and turned the parameters to NaN: the premise of the guard.
"""

import os
import sys

import torch

from megatron_ipt.training import callbacks, loop, parallel
from tests.training.helpers import training_config


class NaNGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def adam_steps(optimizer) -> set:
    steps = set()
    for inner in optimizer.chained_optimizers:
        steps |= {int(s["step"]) for s in inner.optimizer.state.values() if "step" in s}
    return steps


def params_finite(chunks) -> bool:
    return all(torch.isfinite(p).all() for c in chunks for p in c.module.parameters())


if __name__ == "__main__":
    cfg = training_config(sys.argv[1:])
    nan_grad_at, nan_loss_at = (int(os.environ.get(name, 0)) for name in ("FAULT_NAN_GRAD_AT", "FAULT_NAN_LOSS_AT"))
    faults = sorted(k for k in (nan_grad_at, nan_loss_at) if k)
    captured, calls = {}, [0]
    setup, forward_step = loop.setup, loop._forward_step

    def capturing_setup(config):
        captured["run"], captured["chunks"], captured["optimizer"], scheduler = setup(config)
        return captured["run"], captured["chunks"], captured["optimizer"], scheduler

    def poisoned_forward_step(data_iterator, model):
        output, loss_func = forward_step(data_iterator, model)
        if model.training:
            calls[0] += 1
            iteration = (calls[0] - 1) // captured["run"].num_microbatches + 1
            if iteration == nan_grad_at:
                output = NaNGradient.apply(output)
            if iteration == nan_loss_at:
                output = output * float("nan")
        return output, loss_func

    loop.setup, loop._forward_step = capturing_setup, poisoned_forward_step
    stopped = False
    try:
        loop.train(cfg, cfg.data.tokenizer.build())
    except callbacks.NonFiniteLoss as error:
        stopped = True
        print(f"STOPPED: {error}", flush=True)
    chunks, optimizer = captured["chunks"], captured["optimizer"]
    applied = captured["run"].train_iters - len(faults) if not stopped else faults[0] - 1
    assert params_finite(chunks), "a parameter is not finite after the guarded run"
    assert adam_steps(optimizer) == {applied}, (adam_steps(optimizer), applied)
    print(f"GUARD_OK rank {torch.distributed.get_rank()}: parameters finite, {applied} Adam steps applied", flush=True)
    if stopped:
        del optimizer.get_grad_norm  # megatron's own step, no guard, on the same NaN gradients
        optimizer.step()
        assert not params_finite(chunks), "megatron-core did not apply the NaN update"
        print(f"UNGUARDED_STEP_APPLIES_NAN rank {torch.distributed.get_rank()}", flush=True)
    parallel.destroy()
