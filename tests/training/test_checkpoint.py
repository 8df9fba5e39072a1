"""Checkpoints: exact resume, resume at another parallel layout with the optimizer state intact, atomic commit
under SIGKILL, weights-only checkpoints."""

import json
import math
import os
import re
import subprocess
import time

import pytest
import torch

from megatron_ipt.training import checkpoint
from megatron_ipt.training.checkpoint_files import LOCK
from tests.training.helpers import REPO, background, command, environment, run, scalars, wait_for


def tensors(directory, tmp_path):
    """Every tensor of a dist_checkpointing checkpoint, whole (global), read by torch's own DCP converter."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = str(tmp_path / (os.path.basename(directory) + f"-{time.monotonic_ns()}.pt"))
    dcp_to_torch_save(directory, out)
    return {k: v for k, v in torch.load(out, weights_only=False).items() if isinstance(v, torch.Tensor)}


@pytest.mark.slow  # six short runs, ~70 s on 2 cores
def test_resume_is_exact_and_reshards_the_optimizer(corpus, tmp_path):
    """Save at DP=2 with the distributed optimizer after 3 of 6 steps (its state gathered on DP rank 0 over gloo:
    the mem-efficient variant; the kill test below saves the default way). Resumed at DP=2 the losses are
    bit-identical to a straight run; resumed at TP=2 they match it too, which needs the Adam moments, the fp32
    weights and the LR schedule (with --no-load-optim step 5 is off by 2.4e-2); and loading at TP=2 then saving
    gives back the same optimizer tensors, bit for bit."""
    common = ["--use-distributed-optimizer", "--train-iters", "6", "--lr-warmup-iters", "2"]
    run(corpus, 2, *common, "--tensorboard-dir", str(tmp_path / "straight"))
    ck = str(tmp_path / "ck")
    run(
        corpus,
        2,
        *common,
        "--save",
        ck,
        "--save-interval",
        "3",
        "--tensorboard-dir",
        str(tmp_path / "a"),
        "--train-iters",
        "3",
        "--lr-decay-iters",
        "6",
        "--distrib-optim-fully-reshardable-mem-efficient",
    )
    out = run(corpus, 2, *common, "--load", ck, "--tensorboard-dir", str(tmp_path / "b"))
    assert "loaded checkpoint" in out and "at iteration 3" in out and "RNG seeded afresh" not in out
    straight = scalars(str(tmp_path / "straight"), "lm loss")
    resumed = {**scalars(str(tmp_path / "a"), "lm loss"), **scalars(str(tmp_path / "b"), "lm loss")}
    assert resumed == straight  # bit-identical (float32 event values)

    out = run(
        corpus,
        2,
        *common,
        "--tensor-model-parallel-size",
        "2",
        "--load",
        ck,
        "--tensorboard-dir",
        str(tmp_path / "tp2"),
    )
    assert "saved at {'tp': 1, 'pp': 1, 'dp': 2}, now {'tp': 2, 'pp': 1, 'dp': 1}: RNG seeded afresh" in out
    tp2 = scalars(str(tmp_path / "tp2"), "lm loss")
    for step in (4, 5, 6):
        assert abs(tp2[step] - straight[step]) < 1e-4, (step, tp2, straight)

    ck2 = str(tmp_path / "ck2")  # at iteration 3 of 3: no step, only the final save
    run(
        corpus,
        2,
        *common,
        "--tensor-model-parallel-size",
        "2",
        "--load",
        ck,
        "--train-iters",
        "3",
        "--lr-decay-iters",
        "6",
        "--save",
        ck2,
    )
    saved, resaved = (tensors(checkpoint.iteration_dir(d, 3), tmp_path) for d in (ck, ck2))
    optimizer_keys = sorted(k for k in saved if k.startswith("optimizer.state."))
    assert {k.split(".")[2] for k in optimizer_keys} == {"param", "exp_avg", "exp_avg_sq"}
    assert sorted(saved) == sorted(resaved)
    for key in saved:
        assert torch.equal(saved[key], resaved[key]), key

    out = run(corpus, 1, "--train-iters", "6", "--load", ck, expect_rc=1)  # the local optimizer
    assert "holds the state of the distributed optimizer, but this run uses the local one" in out
    assert "pass --no-load-optim to start the optimizer fresh" in out


def test_checkpoint_saved_at_tp2_loads_at_tp1_with_same_loss(corpus, tmp_path):
    ck = str(tmp_path / "ck")
    run(corpus, 2, "--tensor-model-parallel-size", "2", "--train-iters", "3", "--save", ck)
    # lr 0: the logged loss of step 4 is the forward loss of the loaded weights
    frozen = ["--load", ck, "--no-load-optim", "--lr", "0", "--min-lr", "0", "--train-iters", "4"]
    run(corpus, 2, "--tensor-model-parallel-size", "2", *frozen, "--tensorboard-dir", str(tmp_path / "tp2"))
    run(corpus, 1, *frozen, "--tensorboard-dir", str(tmp_path / "tp1"))
    tp2, tp1 = scalars(str(tmp_path / "tp2"), "lm loss"), scalars(str(tmp_path / "tp1"), "lm loss")
    assert abs(tp2[4] - tp1[4]) < 1e-4, (tp2, tp1)
    assert tp2[4] < math.log(32000) - 0.01  # trained weights, not a fresh init


def test_a_killed_save_never_becomes_latest(corpus, tmp_path):
    """SIGKILL the whole job while the iteration-4 checkpoint is written but not committed (checkpoint.STALL_ENV
    holds it there): `latest` stays at 2, the next run resumes from 2 and deletes the leftover. While the first job
    lives, a second one with the same --save is refused, naming the owner, and leaves its `.tmp` alone (before: it
    deleted the live save's `.tmp` as "never committed"); once it is dead, its lock is taken over."""
    ck, log = str(tmp_path / "ck"), tmp_path / "killed.log"
    flags = ["--train-iters", "6", "--save", ck, "--save-interval", "2", "--use-distributed-optimizer"]
    with background(log, corpus, 2, *flags, env={checkpoint.STALL_ENV: "4"}) as job:
        wait_for(job, log, lambda text: len(re.findall(r"stalling, pid (\d+)", text)) >= 2)
        owner = json.load(open(os.path.join(ck, LOCK)))
        second = subprocess.run(
            command(corpus, 2, *flags, "--load", ck), cwd=REPO, env=environment(), capture_output=True, text=True
        )
        assert second.returncode == 1, second.stderr[-3000:]
        assert f"error: --save {ck} is in use by another job (host {owner['host']}, pid {owner['pid']}, " in (
            second.stderr
        )
        assert os.path.isdir(os.path.join(ck, "iter_0000004.tmp"))
    assert checkpoint.latest_iteration(ck) == 2
    assert sorted(os.listdir(ck)) == [
        "iter_0000002",
        "iter_0000004.tmp",
        checkpoint.MARKER,
        LOCK,
        checkpoint.MODEL_FILE,
    ]
    assert os.path.exists(os.path.join(ck, "iter_0000004.tmp", "metadata.json"))  # written, just never committed

    out = run(corpus, 2, *flags, "--load", ck)
    assert f"took over {os.path.join(ck, LOCK)}: its owner (host {owner['host']}, pid {owner['pid']}" in out
    assert f"removed {os.path.join(ck, 'iter_0000004.tmp')}: left by a save that never committed" in out
    assert "loaded checkpoint from" in out and "at iteration 2" in out
    assert "iteration        3/       6" in out and "iteration        2/       6" not in out
    assert sorted(os.listdir(ck)) == [
        "iter_0000002",
        "iter_0000004",
        "iter_0000006",
        checkpoint.MARKER,
        checkpoint.MODEL_FILE,
    ]
    assert checkpoint.latest_iteration(ck) == 6


def test_weights_only_checkpoint_starts_the_optimizer_fresh(corpus, tmp_path):
    """The converter's format (checkpoint.save_weights): `--load` at another layout takes the weights and the
    marker's iteration; optimizer, scheduler and RNG start fresh."""
    weights = str(tmp_path / "weights")
    run(
        corpus,
        1,
        "--train-iters",
        "3",
        script="tests/training/dist_check.py",
        env={"SAVE_WEIGHTS_DIR": weights, "SAVE_WEIGHTS_ITERATION": "7"},
    )
    assert checkpoint.latest_iteration(weights) == 7
    tb = str(tmp_path / "tb")
    out = run(
        corpus, 2, "--tensor-model-parallel-size", "2", "--load", weights, "--train-iters", "9", "--tensorboard-dir", tb
    )
    assert (
        "loaded checkpoint from" in out
        and "at iteration 7; weights-only checkpoint: optimizer, scheduler and RNG start fresh" in out
    )
    loss = scalars(tb, "lm loss")
    assert sorted(loss) == [8, 9]
    assert loss[8] < math.log(32000) - 0.01  # the trained weights, not a fresh init
