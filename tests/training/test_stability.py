"""A step whose loss or gradient norm is NaN/inf never reaches the optimizer update: the run stops (exit 2) or,
with --skip-nonfinite-steps, skips and counts the step. Faults are injected by tests/training/fault_check.py."""

from megatron_ipt.training import checkpoint
from tests.training.helpers import run


def test_an_exploding_init_stops_before_any_update_with_exit_2(corpus, tmp_path):
    # weights ~1e30: RMSNorm keeps the loss finite, the gradients are not
    out = run(
        corpus, 1, "--train-iters", "2", "--init-method-std", "1e30", "--save", str(tmp_path / "ck"), expect_rc=1
    )  # torchrun's own code; the worker's is below
    assert "exitcode: 2" in out
    assert "non-finite grad norm nan at iteration 1: optimizer step not taken" in out
    assert "error: grad norm is nan at iteration 1; exiting (pass --skip-nonfinite-loss to skip such steps)" in out
    assert checkpoint.latest_iteration(str(tmp_path / "ck")) is None


def test_nan_grad_norm_stops_before_megatron_applies_it(corpus):
    """Finite loss, NaN gradients at iteration 2: the run stops with parameters finite and one Adam step applied;
    megatron-core's own step, unguarded, on the same gradients makes them NaN."""
    out = run(corpus, 1, "--train-iters", "3", script="tests/training/fault_check.py", env={"FAULT_NAN_GRAD_AT": "2"})
    assert "non-finite grad norm nan at iteration 2: optimizer step not taken" in out
    assert "STOPPED: grad norm is nan at iteration 2" in out
    assert "GUARD_OK rank 0: parameters finite, 1 Adam steps applied" in out
    assert "UNGUARDED_STEP_APPLIES_NAN rank 0" in out


def test_nan_loss_stops_before_the_update(corpus):
    out = run(corpus, 1, "--train-iters", "3", script="tests/training/fault_check.py", env={"FAULT_NAN_LOSS_AT": "2"})
    assert "non-finite lm loss nan at iteration 2: optimizer step not taken" in out
    assert "STOPPED: lm loss is nan at iteration 2" in out
    assert "GUARD_OK rank 0: parameters finite, 1 Adam steps applied" in out


def test_non_finite_steps_are_skipped_with_the_distributed_optimizer(corpus):
    out = run(
        corpus,
        2,
        "--train-iters",
        "4",
        "--use-distributed-optimizer",
        "--skip-nonfinite-steps",
        script="tests/training/fault_check.py",
        env={"FAULT_NAN_LOSS_AT": "2", "FAULT_NAN_GRAD_AT": "3"},
    )
    assert "lm loss: NAN | grad norm: n/a | number of skipped iterations:   1 | number of nan iterations:   1 |" in out
    # the counts are the steps since the previous line, as Megatron-LM's (log interval 1 here)
    assert "grad norm: nan | number of skipped iterations:   1 | number of nan iterations:   1 |" in out
    assert out.count("number of skipped iterations:   0 | number of nan iterations:   0 |") == 2  # steps 1 and 4
    assert "STOPPED" not in out
    for rank in (0, 1):  # both DP ranks skipped the same steps and went on
        assert f"GUARD_OK rank {rank}: parameters finite, 2 Adam steps applied" in out
