"""Early exit as Megatron-LM does it: --exit-signal-handler (SIGTERM: finish the step, save, exit 0),
--exit-interval and --exit-duration-in-mins, each saving first; the resumed run is bit-identical to a straight one."""

import re
import signal

import psutil
import pytest

from megatron_ipt.training import checkpoint
from tests.training.helpers import background, run, scalars, wait_for


@pytest.mark.slow  # three runs, ~40 s on 2 busy cores
def test_sigterm_saves_exits_0_and_the_resumed_run_is_bit_identical(corpus, tmp_path):
    """SIGTERM every process under torchrun once iteration 3 is logged, as torchrun's forwarding and Slurm do: the
    ranks and the checkpoint writer's helper process (alive since the save at iteration 2, and killed by such a
    signal without preemption.shield_checkpoint_writer). The ranks finish their step, save, and exit 0. The run resumed from that
    checkpoint stops at the next multiple of --exit-interval, saving there, and its losses with the interrupted run's
    are those of a straight run, bit for bit."""
    flags = ["--bf16", "--use-distributed-optimizer", "--train-iters", "20", "--lr-warmup-iters", "2"]
    run(corpus, 2, *flags, "--tensorboard-dir", str(tmp_path / "straight"))

    ck, log = str(tmp_path / "ck"), tmp_path / "signalled.log"
    signalled = [
        *flags,
        "--exit-signal-handler",
        "--save",
        ck,
        "--save-interval",
        "2",
        "--tensorboard-dir",
        str(tmp_path / "a"),
    ]
    with background(log, corpus, 2, *signalled) as job:
        wait_for(job, log, "iteration        3/      20")
        for process in psutil.Process(job.pid).children(recursive=True):
            process.send_signal(signal.SIGTERM)
        assert job.wait(timeout=120) == 0, log.read_text()[-3000:]
    text = log.read_text()
    stopped = re.search(
        r"exiting program after receiving SIGTERM; stopped after iteration (\d+) of 20, checkpoint saved in (\S+)", text
    )
    assert stopped and stopped.group(2) == ck, text[-3000:]
    k = int(stopped.group(1))
    assert 3 <= k < 20 and checkpoint.latest_iteration(ck) == k

    stop = (k // 10 + 1) * 10
    out = run(
        corpus, 2, *flags, "--load", ck, "--save", ck, "--exit-interval", "10", "--tensorboard-dir", str(tmp_path / "b")
    )
    assert f"loaded checkpoint from {ck} at iteration {k}" in out
    assert f"exiting program at iteration {stop} (--exit-interval 10); stopped after iteration {stop} of 20" in out
    assert checkpoint.latest_iteration(ck) == stop
    straight = scalars(str(tmp_path / "straight"), "lm loss")
    first, second = scalars(str(tmp_path / "a"), "lm loss"), scalars(str(tmp_path / "b"), "lm loss")
    assert sorted(first) == list(range(1, k + 1)) and sorted(second) == list(range(k + 1, stop + 1))
    assert {**first, **second} == {step: loss for step, loss in straight.items() if step <= stop}


def test_exit_duration_saves_and_stops(corpus, tmp_path):
    """--exit-duration-in-mins 0: every rank agrees the time is up after the first step; it saves and stops."""
    ck = str(tmp_path / "ck")
    out = run(corpus, 2, "--train-iters", "5", "--exit-duration-in-mins", "0", "--save", ck)
    assert "exiting program after 0 minutes (--exit-duration-in-mins); stopped after iteration 1 of 5" in out
    assert "iteration        2/" not in out and checkpoint.latest_iteration(ck) == 1
    assert "training done" not in out  # it stopped early, and said why
