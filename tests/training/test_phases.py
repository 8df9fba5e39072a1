"""--phase-transition-iterations (Megatron-LM's): a phase ends at its iteration with a checkpoint and an exit; the next
job --load-s it with another --data-path and continues the same LR schedule and iteration count, reading the new
blend from its first sample (a blend sized for that phase alone, as Megatron-LM sizes it)."""

import pytest

from megatron_ipt.training import checkpoint, datasets, loop
from tests.training.helpers import run, scalars, training_config

PHASED = ["--train-iters", "6", "--lr-warmup-iters", "2", "--phase-transition-iterations", "3"]


@pytest.mark.slow  # six short runs, ~2 min on 2 busy cores
def test_a_phase_ends_with_a_checkpoint_and_the_next_continues_the_schedule_on_a_new_blend(corpus, pydoc, tmp_path):
    run(corpus, 2, "--train-iters", "6", "--lr-warmup-iters", "2", "--tensorboard-dir", str(tmp_path / "straight"))

    ck = str(tmp_path / "ck")
    out = run(corpus, 2, *PHASED, "--save", ck, "--tensorboard-dir", str(tmp_path / "p1"))
    assert (
        "exiting program at iteration 3 (--phase-transition-iterations: phase 1 of 2 ends here; resume with --load "
        "and the next phase's --data-path); stopped after iteration 3 of 6, checkpoint saved in " + ck
    ) in out
    assert "phase 1 of 2: iterations 1-3" in out and "from sample 0 of the phase's 12" in out
    assert "training done" not in out and checkpoint.latest_iteration(ck) == 3

    # phase 2 on another blend, preempted at iteration 5 and resumed: the same as phase 2 run in one go
    ck2 = str(tmp_path / "ck2")
    out = run(
        pydoc, 2, *PHASED, "--load", ck, "--save", ck2, "--exit-interval", "5", "--tensorboard-dir", str(tmp_path / "a")
    )
    assert (
        f"phase 2 of 2: iterations 4-6 on --data-path '{pydoc}', from sample 0 of the phase's 12; "
        f"--data-path was '{corpus}' at iteration 3"
    ) in out
    assert "stopped after iteration 5 of 6" in out
    out = run(pydoc, 2, *PHASED, "--load", ck2, "--tensorboard-dir", str(tmp_path / "b"))
    assert f"phase 2 of 2: iterations 4-6 on --data-path '{pydoc}', from sample 8 of the phase's 12" in out
    assert "was '" not in out and "training done at iteration 6" in out
    run(pydoc, 2, *PHASED, "--load", ck, "--tensorboard-dir", str(tmp_path / "whole"))

    whole = scalars(str(tmp_path / "whole"), "lm loss")
    assert sorted(whole) == [4, 5, 6]
    assert {**scalars(str(tmp_path / "a"), "lm loss"), **scalars(str(tmp_path / "b"), "lm loss")} == whole
    # the LR schedule and the iteration count go on as in one uninterrupted run
    straight_lr = scalars(str(tmp_path / "straight"), "learning-rate")
    phased_lr = {**scalars(str(tmp_path / "p1"), "learning-rate"), **scalars(str(tmp_path / "whole"), "learning-rate")}
    assert phased_lr == straight_lr and sorted(straight_lr) == [1, 2, 3, 4, 5, 6]
    # phase 2 trained on the other text: its loss is not the straight run's on the first corpus
    assert abs(whole[4] - scalars(str(tmp_path / "straight"), "lm loss")[4]) > 1e-3

    # a phase needs the global batch size it was trained with (Megatron-LM compares it too)
    out = run(pydoc, 1, *PHASED, "--global-batch-size", "8", "--load", ck, expect_rc=1)
    assert "--phase-transition-iterations needs one global batch size across phases:" in out
    assert "was trained with 4, this run has --global-batch-size 8" in out


def test_each_phase_reads_its_blend_from_the_first_sample(corpus, monkeypatch):
    said = []
    monkeypatch.setattr(loop, "_print", said.append)
    run = training_config(["--model", "tiny", "--micro-batch-size", "2", "--global-batch-size", "4", "--data-path",
                           corpus, "--train-iters", "10", "--phase-transition-iterations", "7,3"]).resolve(2)  # fmt: skip
    assert run.config.data.phase_transition_iterations == (3, 7)  # sorted, as Megatron-LM sorts them
    phases = [(0, 3), (0, 3), (3, 7), (3, 7), (7, 10), (7, 10), (7, 10)]
    assert [run.phase(i) for i in (0, 2, 3, 6, 7, 9, 10)] == phases
    # the training samples asked of the blend: the phase's, not the run's
    assert [datasets.requested_samples(run, i)[0] for i in (0, 3, 8)] == [12, 16, 12]
    progress = {"iteration": 5, "consumed_samples": 20, "global_batch_size": 4, "data_path": corpus}
    assert loop._data_start(run, progress) == 8
    assert said == [f"phase 2 of 3: iterations 4-7 on --data-path '{corpus}', from sample 8 of the phase's 16"]
    # without phases: the consumed samples, and a changed --data-path is said, not refused
    plain = training_config(["--model", "tiny", "--micro-batch-size", "2", "--global-batch-size", "4", "--data-path",
                             corpus, "--train-iters", "10"]).resolve(2)  # fmt: skip
    assert loop._data_start(plain, {**progress, "data_path": "old_text_document"}) == 20
    assert said[-1] == (
        "note: training data changed; --data-path was 'old_text_document' at iteration 5; continuing at sample 20 of "
        "this one's order"
    )


@pytest.mark.parametrize(
    "value, message",
    [
        ("3,x", "error: --phase-transition-iterations: '3,x': give distinct positive iterations separated by commas"),
        ("0", "error: --phase-transition-iterations: '0': give distinct positive"),
        ("3,3", "error: --phase-transition-iterations: '3,3': give distinct positive"),
        ("10", "error: --phase-transition-iterations: 10 is not before the last iteration (10)"),
    ],
)
def test_bad_transitions_are_refused_in_one_line(corpus, value, message, capsys):
    flags = ["--model", "tiny", "--micro-batch-size", "2", "--data-path", corpus, "--train-iters", "10"]
    with pytest.raises(SystemExit) as stop:
        training_config([*flags, "--phase-transition-iterations", value]).resolve(1)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
