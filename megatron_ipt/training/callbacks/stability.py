"""Stability: a step whose loss or gradient norm is NaN/inf never reaches the optimizer update.

The loss is checked by the loop before `optimizer.step()`. The gradient norm is checked inside megatron's own step:
with fp32 or bf16 parameters megatron-core has no loss scaler to notice a non-finite gradient, so it clips with a
NaN coefficient and applies the update, ruining every parameter. `guard_grad_norm` wraps the optimizer's
`get_grad_norm`, which megatron's `ChainedOptimizer.step()` calls after preparing the gradients and before clipping
and updating (0.16.1 to 0.19: see compat.py): a non-finite norm raises out of the step, so nothing is updated, and
the norm is computed once as before. The norm is reduced over the model-parallel ranks (and the gradients over
data-parallel ranks first), so every rank takes the same decision.
"""

from __future__ import annotations

import math

import torch


class NonFiniteLoss(RuntimeError):
    """A step's loss or gradient norm was NaN or inf (and --skip-nonfinite-steps was not given)."""


class NonFiniteGradNorm(Exception):
    def __init__(self, value: float):
        super().__init__(f"grad norm is {value}")
        self.value = value


def guard_grad_norm(optimizer) -> None:
    measure = optimizer.get_grad_norm

    def get_grad_norm():
        norm = measure()
        if norm is not None and not math.isfinite(norm):
            raise NonFiniteGradNorm(norm)
        return norm

    optimizer.get_grad_norm = get_grad_norm  # the instance attribute shadows the method megatron's step() calls


class StabilityGuard:
    """Counts non-finite steps; stops the run at the first one unless told to skip such steps."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.skipped = 0
        self.nan_iterations = 0

    def nonfinite(self, what: str, value: float, iteration: int) -> None:
        self.nan_iterations += 1
        if torch.distributed.get_rank() == torch.distributed.get_world_size() - 1:
            print(f"non-finite {what} {value} at iteration {iteration}: optimizer step not taken", flush=True)
        if not self.skip:
            raise NonFiniteLoss(f"{what} is {value} at iteration {iteration}")
        self.skipped += 1
