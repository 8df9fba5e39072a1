"""--log-progress (Megatron-LM's): progress.txt in --save, "Starting job" per job and a "Saved checkpoint" line after
each save, with this job's and the cumulative throughput counted as Megatron-LM counts them."""

import re
from datetime import datetime

import pytest

from megatron_ipt.training import checkpoint
from megatron_ipt.training.callbacks import flops_per_iteration, progress
from tests.training.helpers import run, training_config

LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\tJob ID: 4242\t# GPUs: 2\t(.*)")
SAVED = re.compile(
    r"Saved checkpoint\tIteration: (\d+)\tJob throughput: (\d+\.\d) TFLOP/s/GPU\tCumulative throughput: "
    r"(\d+\.\d) TFLOP/s/GPU\tFloating-point operations: (\d\.\d\de\+\d\d)\tTokens \(in billions\): (\d+\.\d\d)"
)


@pytest.mark.slow  # two short runs, ~1 min on 2 busy cores
def test_progress_lines_after_two_saves_and_a_resume(corpus, tmp_path):
    ck = str(tmp_path / "ck")
    flags = ["--train-iters", "4", "--lr-decay-iters", "6", "--save", ck, "--save-interval", "2", "--log-progress"]
    run(corpus, 2, *flags, env={"SLURM_JOB_ID": "4242"})  # saves at 2 and 4
    run(corpus, 2, *flags, "--train-iters", "6", "--load", ck, env={"SLURM_JOB_ID": "4242"})  # and at 6

    lines = open(f"{ck}/progress.txt").read().splitlines()
    parsed = [LINE.fullmatch(line) for line in lines]
    assert all(parsed), lines
    events = [m.group(2) for m in parsed]
    starting, saved = "Starting job", "Saved checkpoint"
    assert [e.split("\t")[0] for e in events] == [starting, saved, saved, starting, saved]
    saves = [SAVED.fullmatch(e) for e in events if e != "Starting job"]
    assert all(saves), events
    config = training_config(
        ["--model", "tiny", "--micro-batch-size", "2", "--global-batch-size", "4", "--data-path", corpus]
        + ["--train-iters", "6"]
    )
    per_iteration = flops_per_iteration(config.model, 4, config.model.padded_vocab_size(1))
    # the FLOPs go on across the resume (counted from the checkpoint's), and the checkpoint records them
    assert [(int(m.group(1)), m.group(4)) for m in saves] == [(i, f"{i * per_iteration:.2e}") for i in (2, 4, 6)]
    assert all(m.group(5) == f"{i * 4 * config.model.seq_length / 1e9:.2f}" for m, i in zip(saves, (2, 4, 6)))
    _, _, meta = checkpoint._latest(ck)
    assert meta["floating_point_operations"] == pytest.approx(6 * per_iteration)
    assert meta["consumed_samples"] == 24 and meta["global_batch_size"] == 4
    stamps = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S") for m in parsed]
    assert stamps == sorted(stamps)


def test_log_progress_needs_save(corpus, capsys):
    with pytest.raises(SystemExit) as stop:
        training_config(["--model", "tiny", "--micro-batch-size", "2", "--data-path", corpus, "--train-iters", "2",
                         "--log-progress"])  # fmt: skip
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: --log-progress: it writes progress.txt in --save: give --save\n"


def _line(stamp, world, event):
    return f"{stamp}\tJob ID: \t# GPUs: {world}\t{event}\n"


def _saved(iteration, flops):
    return (
        f"Saved checkpoint\tIteration: {iteration}\tJob throughput: 1.0 TFLOP/s/GPU\tCumulative throughput: 1.0 "
        f"TFLOP/s/GPU\tFloating-point operations: {flops:.2e}\tTokens (in billions): 0.01"
    )


def test_cumulative_counts_from_the_earliest_start_at_this_world_size(tmp_path):
    path = tmp_path / "progress.txt"
    path.write_text(
        _line("2026-01-01 00:00:00", 8, "Starting job")
        + _line("2026-01-01 01:00:00", 8, _saved(100, 1e18))
        + _line("2026-01-01 02:00:00", 4, "Starting job")  # another world size: the count starts afresh
        + _line("2026-01-01 03:00:00", 4, _saved(200, 2e18))
        + _line("2026-01-01 04:00:00", 8, "Starting job")  # back to 8: from here, with the FLOPs saved before it
        + "2026-01-01 04:30:00\tJob ID: \t# GPUs: 8\tSaved chec"  # a torn line (a job killed mid-write)
        + "\n"
        + _line("2026-01-01 05:00:00", 8, _saved(300, 3e18))
        + _line("2026-01-01 06:00:00", 8, "Starting job")  # a later job of the same size: still the earliest
    )
    assert progress.cumulative_start(str(path), 8) == (datetime(2026, 1, 1, 4), 2e18)
    assert progress.cumulative_start(str(path), 4) == (None, 0.0)  # the last 4-GPU run ended at the 8-GPU start


def test_saved_line_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(progress.torch.distributed, "get_rank", lambda: 0)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    log = progress.ProgressLog(str(tmp_path), world_size=2, job_start=1000.0)
    (tmp_path / "progress.txt").write_text(
        _line("2026-01-01 00:00:00", 2, "Starting job") + _line("2026-01-01 00:10:00", 2, _saved(10, 1.2e15))
    )
    log.resumed(1.2e15)  # the checkpoint this job loaded

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 1, 0, 20)  # 1200 s after the first start

    monkeypatch.setattr(progress, "datetime", Clock)
    monkeypatch.setattr(progress.time, "time", lambda: 1100.0)  # 100 s into this job
    log.saved(20, 2.4e15 + 1.2e15, consumed_samples=80, seq_length=128)
    last = (tmp_path / "progress.txt").read_text().splitlines()[-1]
    # job: 2.4e15 FLOPs / (100 s x 1e12 x 2 GPUs) = 12.0; cumulative: 3.6e15 / (1200 s x 1e12 x 2) = 1.5
    assert last == (
        "2026-01-01 00:20:00\tJob ID: \t# GPUs: 2\tSaved checkpoint\tIteration: 20\tJob throughput: 12.0 TFLOP/s/GPU\t"
        "Cumulative throughput: 1.5 TFLOP/s/GPU\tFloating-point operations: 3.60e+15\tTokens (in billions): 0.00"
    )
