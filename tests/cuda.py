"""What the tests marked `cuda` share (`make gpu-check` runs them; see docs/development.md#checking-a-gpu-machine).

Tests marked `cuda` are skipped where CUDA is absent (tests/conftest.py), so CI is unaffected. With
IPT_CUDA_TESTS_ON_CPU=1 they run on the CPU backend instead: a developer without a GPU checks their plumbing that way
(every assertion holds on either device; `DEVICE` says which one the run must have used)."""

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_CPU_ENV = "IPT_CUDA_TESTS_ON_CPU"


def gpus() -> int:
    """How many processes a test may launch, one per GPU (on CPU with ON_CPU_ENV: two, as the CPU tests do)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 2


def needs(nproc: int):
    """A parametrize mark for a case that launches `nproc` processes: skipped with fewer GPUs."""
    return pytest.mark.skipif(gpus() < nproc, reason=f"needs {nproc} GPUs, this machine has {gpus()}")


def memory_line_names() -> tuple:
    """The memory figures the training log's memory line names: the CUDA allocator's on a GPU, the process's resident
    set on the CPU backend. Seeing the first proves a run placed its model on the GPU."""
    return ("mem-allocated", "mem-max-allocated") if DEVICE == "cuda" else ("host-rss",)


def skip_reason() -> str:
    if torch.cuda.is_available() or os.environ.get(ON_CPU_ENV) == "1":
        return ""
    return f"needs CUDA (torch.cuda.is_available() is False; {ON_CPU_ENV}=1 runs it on the CPU backend)"
