"""Shared by the training tests: launch tools/pretrain.py (or a test driver) under torchrun with gloo on CPU, on the
tiny preset and real Mistral-tokenized text, and read TensorBoard event files with TensorBoard's own loader."""

import contextlib
import signal
import subprocess
import time

import psutil

from megatron_ipt import assets
from megatron_ipt.training import config
from tests import launch

# re-exported (`x as x`): the training tests take these from here
from tests.launch import REPO as REPO
from tests.launch import environment as environment
from tests.launch import free_port as free_port


def training_config(argv):
    """What tools/pretrain.py makes of these flags."""
    return config.TrainingConfig.from_args(config.build_parser().parse_args(argv))


def pretrain_flags(corpus, *flags):
    """tools/pretrain.py's flags for the tiny preset on `corpus` (one prefix or several), then `flags`."""
    data_path = list(corpus) if isinstance(corpus, (list, tuple)) else [corpus]
    return [
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
        "--tokenizer-type",
        "SentencePieceTokenizer",
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


def command(corpus, nproc, *flags, script="tools/pretrain.py"):
    return [*launch.launcher(nproc), script, *pretrain_flags(corpus, *flags)]


def run(corpus, nproc, *flags, script="tools/pretrain.py", expect_rc=0, env=None):
    return launch.run(script, *pretrain_flags(corpus, *flags), nproc=nproc, env=env, expect_rc=expect_rc, timeout=300)


def kill_tree(pid: int) -> None:
    """SIGKILL a job this test started: torchrun, its ranks (each in a session of its own) and their children (the
    checkpoint writer processes), all by pid."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in tree:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


@contextlib.contextmanager
def background(log, corpus, nproc, *flags, env=None):
    """A training job (as `run` starts it) in the background, in a session of its own, its output going to the file
    `log`; yields the torchrun Popen, and on the way out SIGKILLs the whole job and reaps torchrun."""
    with open(log, "w") as out:
        job = subprocess.Popen(
            command(corpus, nproc, *flags),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment(**(env or {})),
            start_new_session=True,
        )
    try:
        yield job
    finally:
        kill_tree(job.pid)
        job.wait()


def wait_for(job, log, until, timeout=120) -> str:
    """Poll the log of a `background` job until `until` (a string the log holds, or a test of its text) holds;
    fails with the log's tail if the job exits or `timeout` seconds pass first. Returns the log's text."""
    done = (lambda text: until in text) if isinstance(until, str) else until
    deadline = time.monotonic() + timeout
    while not done(text := log.read_text()):
        assert job.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    return text


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
