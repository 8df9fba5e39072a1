import os
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*argv, nproc=None, env=None, expect_rc=0, timeout=600):
    """A script of the repo in a subprocess (under torchrun with `nproc` processes); returns its output."""
    launcher = (
        [sys.executable]
        if nproc is None
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(nproc),
            "--master-port",
            str(_port()),
        ]
    )
    full_env = {**os.environ, "PYTHONPATH": REPO, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(
        launcher + [str(a) for a in argv], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == expect_rc, out[-6000:]
    return out


@pytest.fixture(scope="session")
def smollm2_checkpoint(tmp_path_factory):
    """SmolLM2-135M-Instruct (real weights) converted once per session with the CLI: (HF dir, checkpoint dir)."""
    from megatron_ipt import assets

    hf_dir = assets.smollm2_hf_dir()
    save = tmp_path_factory.mktemp("smollm2") / "megatron"
    out = run("tools/convert_checkpoint.py", "hf-to-megatron", "--hf-dir", hf_dir, "--save", save)
    assert "wrote" in out and "134.5 M parameters" in out, out
    return hf_dir, save
