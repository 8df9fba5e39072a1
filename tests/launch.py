"""Launching a script of the repo as a user would, in a subprocess: plain Python or under torchrun (gloo on CPU),
with the repo on PYTHONPATH. Shared by the test packages (tests/training/helpers.py builds its pretrain runs on it)."""

import os
import socket
import subprocess
import sys

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(nproc=None) -> list:
    """The command line's start: the interpreter, or torchrun with `nproc` processes on a free port."""
    if nproc is None:
        return [sys.executable]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-port",
        str(free_port()),
    ]


# megatron-core writes its attention-backend choice into os.environ when it builds a model (NVTE_*_ATTN); a test that
# builds one in the pytest process would hand it to every script launched after it, where a model with another
# --attention-backend then refuses it.
_SET_BY_MODEL_BUILDS = ("NVTE_FLASH_ATTN", "NVTE_FUSED_ATTN", "NVTE_UNFUSED_ATTN")


def environment(**extra) -> dict:
    """The test environment for a launched script; `extra` adds or overrides (e.g. OMP_NUM_THREADS) variables."""
    inherited = {k: v for k, v in os.environ.items() if k not in _SET_BY_MODEL_BUILDS}
    return {**inherited, "PYTHONPATH": REPO, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **extra}


def run(*argv, nproc=None, env=None, expect_rc=0, timeout=600) -> str:
    """`argv` (a script of the repo and its arguments) in a subprocess, under torchrun with `nproc` processes if
    given; asserts its exit status and returns its output (stdout then stderr)."""
    proc = subprocess.run(
        launcher(nproc) + [str(a) for a in argv],
        cwd=REPO,
        env=environment(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == expect_rc, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr
