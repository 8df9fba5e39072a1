"""Shared by the training tests: launch tools/pretrain.py (or a test driver) under torchrun with gloo on CPU, on the
tiny preset and real Mistral-tokenized text, and read TensorBoard event files with TensorBoard's own loader."""

import os
import socket
import subprocess
import sys

from megatron_ipt import assets
from megatron_ipt.training import config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def training_config(argv):
    """What tools/pretrain.py makes of these flags."""
    return config.TrainingConfig.from_args(config.build_parser().parse_args(argv))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(corpus, nproc, *flags, script="tools/pretrain.py"):
    data_path = list(corpus) if isinstance(corpus, (list, tuple)) else [corpus]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-port",
        str(free_port()),
        script,
        "--model",
        "tiny",
        "--micro-batch-size",
        "2",
        "--global-batch-size",
        "4",
        "--lr",
        "1e-3",
        "--data-path",
        *data_path,
        "--split",
        "90,10,0",
        "--tokenizer-model",
        assets.mistral_tokenizer_model(),
        "--log-interval",
        "1",
        # the defaults these tests' golden values were made with, before the defaults became Megatron-LM's
        "--lr-decay-style",
        "cosine",
        "--eval-iters",
        "10",
        *flags,
    ]


def environment(**extra):
    return dict(os.environ, PYTHONPATH=REPO, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", **extra)


def run(corpus, nproc, *flags, script="tools/pretrain.py", expect_rc=0, env=None):
    proc = subprocess.run(
        command(corpus, nproc, *flags, script=script),
        cwd=REPO,
        env=environment(**(env or {})),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == expect_rc, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def scalars(tb_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def tags(tb_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(tb_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return set(acc.Tags()["scalars"])
