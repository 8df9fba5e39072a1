"""megatron_ipt/training/cpu.py: what the CPU backend changes is invisible in a training log."""

from tests.training import helpers


def test_dropout_trains_without_the_shared_generator_warning(corpus):
    """With dropout > 0 (Megatron-LM's default 0.1) every forward pass forks the RNG tracker, whose "GPU" generator
    is the CPU one here: megatron-core warned once per forward pass and drowned the log (1,280 of 1,484 lines)."""
    out = helpers.run(
        corpus, 2, "--hidden-dropout", "0.1", "--attention-dropout", "0.1", "--train-iters", "4", "--eval-iters", "1"
    )
    assert "iteration        4/       4" in out
    assert "CPU RNG state changed" not in out
