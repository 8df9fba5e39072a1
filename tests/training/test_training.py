"""End-to-end training on CPU through torchrun (gloo) on the tiny preset and real Mistral-tokenized text."""
import math
import os
import socket
import subprocess
import sys

import pytest

from megatron_ipt import assets
from megatron_ipt.training import callbacks, checkpoint, config, data

from tests.training.make_data import make

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("data") / "pydoc_text_document")
    return make(prefix, assets.pydoc_topics()[:40], assets.mistral_tokenizer_model())


GOLDEN_TP2_LOSS = {1: 10.385370, 6: 10.136378, 12: 10.043119}


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(corpus, nproc, *flags, script="tools/pretrain.py", expect_rc=0):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port",
           str(_port()), script, "--model", "tiny", "--micro-batch-size", "2", "--global-batch-size", "4",
           "--lr", "1e-3", "--data-path", corpus, "--split", "90,10,0",
           "--tokenizer-model", assets.mistral_tokenizer_model(), "--log-interval", "1", *flags]
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == expect_rc, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def scalars(tb_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(tb_dir)
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def test_tp2_trains_logs_tensorboard_and_saves_atomically(corpus, tmp_path):
    tb, ck = str(tmp_path / "tb"), str(tmp_path / "ck")
    out = run(corpus, 2, "--tensor-model-parallel-size", "2", "--train-iters", "12", "--eval-interval", "6",
              "--eval-iters", "1", "--save", ck, "--save-interval", "4", "--keep-last", "2", "--tensorboard-dir", tb)
    assert "iteration       12/      12 | consumed samples:           48" in out
    loss = scalars(tb, "lm loss")
    assert sorted(loss) == list(range(1, 13))
    assert loss[12] < loss[1] - 0.05, loss
    # the initial loss of a random 32k-vocab model is about ln(32000)
    assert abs(loss[1] - math.log(32000)) < 0.3
    for tag in ("learning-rate", "grad-norm", "batch-size", "lm loss validation", "throughput",
                "tokens-per-sec-per-gpu", "mfu", "iteration-time", "lm loss vs samples"):
        assert scalars(tb, tag), tag
    assert set(scalars(tb, "lm loss validation")) == {6, 12}
    # golden values from our own run of this exact config (torch 2.13.0 CPU, megatron-core 0.16.1); tolerance 2e-3
    # covers float32 reduction-order differences between CPUs
    for step, golden in GOLDEN_TP2_LOSS.items():
        assert abs(loss[step] - golden) < 2e-3, (step, loss[step], golden)
    assert sorted(os.listdir(ck)) == ["iter_0000008", "iter_0000012", checkpoint.MARKER]
    assert checkpoint.latest_iteration(ck) == 12


def test_exact_resume_dp2_distributed_optimizer(corpus, tmp_path):
    common = ["--use-distributed-optimizer", "--train-iters", "6", "--lr-warmup-iters", "2"]
    run(corpus, 2, *common, "--tensorboard-dir", str(tmp_path / "straight"))
    ck = str(tmp_path / "ck")
    run(corpus, 2, *common, "--save", ck, "--save-interval", "3", "--tensorboard-dir", str(tmp_path / "a"),
        "--train-iters", "3", "--lr-decay-iters", "6")
    out = run(corpus, 2, *common, "--load", ck, "--tensorboard-dir", str(tmp_path / "b"))
    assert "loaded checkpoint" in out and "at iteration 3" in out
    straight = scalars(str(tmp_path / "straight"), "lm loss")
    resumed = {**scalars(str(tmp_path / "a"), "lm loss"), **scalars(str(tmp_path / "b"), "lm loss")}
    assert resumed == straight  # bit-identical (float32 event values)


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


def test_pipeline_parallel_and_dp_replicas_identical(corpus, tmp_path):
    tb = str(tmp_path / "pp")
    run(corpus, 2, "--pipeline-model-parallel-size", "2", "--train-iters", "8", "--tensorboard-dir", tb)
    loss = scalars(tb, "lm loss")
    assert loss[8] < loss[1] - 0.05
    out = run(corpus, 2, "--use-distributed-optimizer", "--train-iters", "4", script="tests/training/dist_check.py")
    assert "DP_PARAMS_IDENTICAL dp=2" in out


def test_non_finite_loss_stops_before_update(corpus, tmp_path):
    out = run(corpus, 1, "--train-iters", "2", "--init-method-std", "1e30", "--save", str(tmp_path / "ck"),
              expect_rc=1)  # torchrun's own code; the worker's is below
    assert "exitcode: 2" in out
    assert "non-finite lm loss" in out and "optimizer step not taken" in out
    assert checkpoint.latest_iteration(str(tmp_path / "ck")) is None


def test_empty_split_is_an_error_not_a_hang(corpus):
    with pytest.raises(ValueError, match="test split .* holds 0 of 40 sequences"):
        data.check_splits_not_empty([corpus], "969,30,1", [8, 8, 8])
    data.check_splits_not_empty([corpus], "969,30,1", [8, 8, 0])


def test_stale_index_cache_is_rebuilt(corpus, tmp_path):
    cache = str(tmp_path / "cache")
    assert data.ensure_fresh_cache(cache, [corpus]) is False
    open(os.path.join(cache, "x-GPTDataset-train-shuffle_index.npy"), "w").close()
    assert data.ensure_fresh_cache(cache, [corpus]) is False  # same files: cache kept
    assert os.listdir(cache) != ["source-files.json"]
    os.utime(corpus + ".bin", ns=(1, 1))  # the .bin changed under the same prefix
    assert data.ensure_fresh_cache(cache, [corpus]) is True
    assert os.listdir(cache) == ["source-files.json"]


def test_every_preset_parses_and_overrides():
    for name in config.PRESETS:
        args = config.parse_args(["--model", name, "--micro-batch-size", "1", "--train-iters", "1"])
        assert args.vocab_size in (32000, 128256)
    args = config.parse_args(["--model", "mistral-7b", "--micro-batch-size", "1", "--train-iters", "1",
                              "--num-layers", "4", "--seq-length", "128"])
    assert (args.num_layers, args.seq_length, args.hidden_size) == (4, 128, 4096)


def test_flops_hand_count():
    args = config.parse_args(["--model", "tiny", "--micro-batch-size", "2", "--train-iters", "1"])
    args.global_batch_size, args.padded_vocab_size = 4, 32000
    # tiny: h=64, s=64, L=2, heads 4, groups 2 (kv width 32), ffn 176, V=32000
    per_layer = 64 * (64 + 2 * 32) + 64 * 64 + 64 * 64 + 3 * 64 * 176  # qkv + out proj + attention + swiglu
    assert callbacks.flops_per_iteration(args) == 6 * 4 * 64 * (2 * per_layer + 64 * 32000)


def test_tp2_pp2_on_four_processes_and_virtual_pipeline(corpus, tmp_path):
    tb = str(tmp_path / "tp2pp2")
    run(corpus, 4, "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2", "--train-iters", "8",
        "--tensorboard-dir", tb)
    loss = scalars(tb, "lm loss")
    assert loss[8] < loss[1] - 0.05
    vp = str(tmp_path / "vp")  # interleaved 1F1B: 4 layers, 2 stages, 1 layer per virtual stage
    run(corpus, 2, "--num-layers", "4", "--micro-batch-size", "1", "--pipeline-model-parallel-size", "2",
        "--num-layers-per-virtual-pipeline-stage", "1", "--train-iters", "8", "--tensorboard-dir", vp)
    loss = scalars(vp, "lm loss")
    assert loss[8] < loss[1] - 0.05
