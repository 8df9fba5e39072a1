"""CPU backend for megatron-core: lets its model, schedules, DDP, optimizers and dist_checkpointing run on CPU/gloo.

Applied once per process by `apply()` only when CUDA is unavailable; nothing else in the code refers to it.
megatron-core hard-codes CUDA in places that have nothing to do with the maths (device placement, streams, RNG state,
type checks); this module patches exactly those:

1. `torch.cuda.current_device` -> the CPU device; streams, events, `synchronize`, `empty_cache`, memory stats and
   nvtx become no-ops; `Tensor.cuda` / `Module.cuda` are identities (buffers such as DDP grad buffers and the
   attention `GlobalMemoryBuffer` are allocated on `current_device()`).
2. A `TorchFunctionMode`, entered once for the process, rewrites `device="cuda[:N]"` arguments and `.to("cuda")`
   to CPU (schedules build `torch.zeros(..., device="cuda")`, the causal mask and RoPE `inv_freq` likewise).
3. CUDA RNG calls (`torch.cuda.get_rng_state/set_rng_state/manual_seed` and megatron's
   `tensor_parallel.random._get_cuda_rng_state/_set_cuda_rng_state`) use the CPU generator, so
   `model_parallel_cuda_manual_seed` and the RNG tracker work.
4. `clip_grad_by_total_norm_fp32` without its `torch.cuda.FloatTensor` type assert.
5. `Tensor.type()` with no argument reports the `torch.cuda.*Tensor` name, which megatron's optimizers compare.
6. The RNG tracker's "CPU RNG state changed within GPU RNG context" warning is dropped: with 3. the "GPU" generator
   IS the CPU one, so every dropout inside `fork()` changes it by design (the tracker still restores the outer state
   on exit), and with dropout > 0 the warning came once per forward pass and drowned the log.
"""

from __future__ import annotations

import contextlib
import logging

import torch

_applied = False
_CPU = torch.device("cpu")


def _to_cpu_device(value):
    if isinstance(value, torch.device) and value.type == "cuda":
        return _CPU
    if isinstance(value, str) and value.startswith("cuda"):
        return _CPU
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return value


class _CudaToCpuMode(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "device" in kwargs:
            dev = kwargs["device"]
            if (isinstance(dev, torch.device) and dev.type == "cuda") or (
                isinstance(dev, str) and dev.startswith("cuda")
            ):
                kwargs["device"] = _CPU
            elif isinstance(dev, int) and not isinstance(dev, bool) and func is not torch.Tensor.to:
                kwargs["device"] = _CPU  # current_device() integers from CUDA-minded callers
        if func in (torch.Tensor.to, torch.Tensor.cuda) and args:
            args = tuple(_to_cpu_device(a) if i > 0 else a for i, a in enumerate(args))
        return func(*args, **kwargs)


class _NoOpContext:
    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __getattr__(self, name):
        return lambda *a, **k: None


def _noop(*args, **kwargs):
    return None


def _fresh_noop():
    # A distinct function per patched attribute: torch._dynamo's trace rules reject one object under two names.
    return lambda *args, **kwargs: None


def _patch_torch_cuda():
    cuda = torch.cuda
    cuda.current_device = lambda: _CPU
    cuda.set_device = _fresh_noop()
    cuda.synchronize = _fresh_noop()
    cuda.empty_cache = _fresh_noop()
    cuda.device_count = lambda: 0
    for name in ("memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved"):
        setattr(cuda, name, lambda *a, **k: 0)
    cuda.memory_stats = lambda *a, **k: {}
    cuda.reset_peak_memory_stats = _fresh_noop()
    cuda.Stream = _NoOpContext
    cuda.Event = _NoOpContext
    cuda.stream = lambda *a, **k: contextlib.nullcontext()
    cuda.current_stream = lambda *a, **k: _NoOpContext()
    cuda.default_stream = lambda *a, **k: _NoOpContext()
    cuda.nvtx.range_push = _fresh_noop()
    cuda.nvtx.range_pop = _fresh_noop()
    # 3. CUDA RNG -> CPU generator
    cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()
    cuda.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    cuda.manual_seed_all = _fresh_noop()  # torch.manual_seed calls it after seeding the CPU generator
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    # 5. megatron compares `.type()` strings against torch.cuda.FloatTensor & co.
    original_type = torch.Tensor.type

    def _type(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None:
            name = original_type(self)
            return name.replace("torch.", "torch.cuda.", 1) if not name.startswith("torch.cuda.") else name
        return original_type(self, dtype, non_blocking, **kwargs)

    torch.Tensor.type = _type


_SHARED_GENERATOR_WARNING = "CPU RNG state changed within GPU RNG context"


class _DropSharedGeneratorWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _SHARED_GENERATOR_WARNING


def _patch_megatron():
    from megatron.core.tensor_parallel import random as mp_random

    mp_random._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    mp_random._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    logging.getLogger(mp_random.__name__).addFilter(_DropSharedGeneratorWarning())

    from megatron.core.optimizer import clip_grads

    def clip_grad_by_total_norm_fp32(parameters, max_norm, total_norm, use_decoupled_grad=False):
        if isinstance(parameters, torch.Tensor):
            parameters = [parameters]
        grads = []
        for param in parameters:
            grad = getattr(param, "decoupled_grad", None) if use_decoupled_grad else param.grad
            if grad is not None:
                grads.append(grad.detach())
        clip_coeff = max_norm / (total_norm + 1.0e-6)
        if clip_coeff < 1.0 and grads:
            torch._foreach_mul_(grads, clip_coeff)

    clip_grads.clip_grad_by_total_norm_fp32 = clip_grad_by_total_norm_fp32
    import megatron.core.optimizer.optimizer as optimizer_module

    if hasattr(optimizer_module, "clip_grad_by_total_norm_fp32"):
        optimizer_module.clip_grad_by_total_norm_fp32 = clip_grad_by_total_norm_fp32


def apply() -> bool:
    """Install the CPU backend if CUDA is unavailable. Returns True when it is active. Idempotent."""
    global _applied
    if _applied:
        return True
    if torch.cuda.is_available():
        return False
    _patch_torch_cuda()
    _patch_megatron()
    _CudaToCpuMode().__enter__()  # entered for the life of the process, never exited
    _applied = True
    return True
