"""On CUDA (marked `cuda`: skipped without a GPU; `make gpu-check` runs it): the tiny model trained with NCCL in bf16
and fp32, with and without the distributed optimizer, saves at step 3 of 6 and resumes from there bit-exact (the
resumed run's losses of steps 4-6 equal the straight run's, float for float). One GPU; TP=2 and DP=2 where there
are two. --deterministic-mode, as a user who wants bit-exact resumption runs it (Megatron-LM's flag)."""

import math
import os
import shutil

import pytest

from megatron_ipt.training import checkpoint
from tests.cuda import memory_line_names, needs
from tests.training.helpers import run, scalars

pytestmark = pytest.mark.cuda

LAYOUTS = {
    "1gpu": (1, []),
    "tp2": (2, ["--tensor-model-parallel-size", "2"]),
    "dp2": (2, []),
}


def checkpoint_at(save_dir: str, iteration: int, out_dir: str) -> str:
    """A checkpoint directory whose latest committed checkpoint is `iteration` of the run that wrote `save_dir` (which
    went on past it): what a run killed right after that save would have left."""
    os.makedirs(out_dir)
    shutil.copytree(checkpoint.iteration_dir(save_dir, iteration), checkpoint.iteration_dir(out_dir, iteration))
    shutil.copy(os.path.join(save_dir, checkpoint.MODEL_FILE), out_dir)
    with open(os.path.join(out_dir, checkpoint.MARKER), "w") as f:
        f.write(str(iteration))
    return out_dir


@pytest.mark.parametrize("optimizer", ["local", "distributed"])
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("layout", [pytest.param(name, marks=needs(nproc)) for name, (nproc, _) in LAYOUTS.items()])
def test_train_save_resume_is_bit_exact(corpus, tmp_path, layout, precision, optimizer):
    nproc, layout_flags = LAYOUTS[layout]
    flags = [
        *layout_flags,
        "--train-iters",
        "6",
        "--lr-warmup-iters",
        "2",
        "--deterministic-mode",
        *(["--bf16"] if precision == "bf16" else []),
        *(["--use-distributed-optimizer"] if optimizer == "distributed" else []),
    ]
    ck = str(tmp_path / "ck")
    out = run(corpus, nproc, *flags, "--save", ck, "--save-interval", "3", "--tensorboard-dir", str(tmp_path / "a"))
    assert all(name + ":" in out for name in memory_line_names()), out[-3000:]  # the model ran on this device
    straight = scalars(str(tmp_path / "a"), "lm loss")
    assert sorted(straight) == [1, 2, 3, 4, 5, 6] and all(math.isfinite(v) for v in straight.values())
    assert straight[6] < straight[1]  # it trains

    resume_from = checkpoint_at(ck, 3, str(tmp_path / "ck3"))
    out = run(corpus, nproc, *flags, "--load", resume_from, "--tensorboard-dir", str(tmp_path / "b"))
    assert "loaded checkpoint from" in out and "at iteration 3" in out and "RNG seeded afresh" not in out
    resumed = scalars(str(tmp_path / "b"), "lm loss")
    assert resumed == {step: straight[step] for step in (4, 5, 6)}  # bit-identical (float32 event values)
