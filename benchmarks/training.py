"""Training step time: our loop vs a bare megatron-core forward-backward + optimizer loop, same tiny model and data.

Also checks the FLOP count behind MFU against a hand count. One process, CPU (gloo) or GPU. The two loops run in
the order ours, bare, bare, ours (so drift on a shared machine hits both alike); each figure is the median step.
    PYTHONPATH=. python benchmarks/training.py [--iters 30] [--model tiny]
"""

import argparse
import os
import socket
import statistics
import tempfile
import time

import numpy as np


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _config(flags):
    from megatron_ipt.training import config

    return config.TrainingConfig.from_args(config.build_parser().parse_args(flags))


def _ours(flags, tok, warmup):
    from megatron_ipt.training import loop, parallel

    times = loop.train(_config(flags), tok)["step_times"][warmup:]
    parallel.destroy()
    return times


def _bare(flags, tok, warmup):
    """The same setup, then only zero-grad, forward-backward and megatron's optimizer.step() per iteration."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_ipt.training import datasets, loop, parallel

    run, chunks, optimizer, _ = loop.setup(_config(flags))
    micro_batch_size, seq_length = run.config.optimizer.micro_batch_size, run.config.model.seq_length
    del optimizer.get_grad_norm  # megatron's own step, without our non-finite grad-norm guard
    train_ds = datasets.build_datasets(run, datasets.MegatronTokenizerAdapter(tok))[0]
    iterator = datasets.batches(train_ds, 0, micro_batch_size)
    forward_backward = get_forward_backward_func()
    times = []
    for _ in range(run.train_iters):
        start = time.perf_counter()
        chunks[0].zero_grad_buffer()
        optimizer.zero_grad()
        forward_backward(
            forward_step_func=loop._forward_step,
            data_iterator=iterator,
            model=chunks,
            num_microbatches=run.num_microbatches,
            seq_length=seq_length,
            micro_batch_size=micro_batch_size,
            forward_only=False,
        )
        optimizer.step()
        times.append(time.perf_counter() - start)
    parallel.destroy()
    return times[warmup:]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5, help="untimed first steps of each run (at most half of --iters)")
    p.add_argument("--model", default="tiny")
    p.add_argument("--micro-batch-size", type=int, default=4)
    opts = p.parse_args()
    warmup = min(opts.warmup, opts.iters // 2)  # a short run (--iters 5) still times some steps
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=_free_port())

    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from megatron_ipt import assets
    from megatron_ipt.tokenizers import build_tokenizer
    from megatron_ipt.training import callbacks

    tok = build_tokenizer("SentencePieceTokenizer", assets.mistral_tokenizer_model())
    workdir = tempfile.mkdtemp(prefix="bench-training-")
    prefix = os.path.join(workdir, "pydoc_text_document")
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for ids in tok.encode_batch(assets.pydoc_topics()):
        builder.add_document(np.array(ids + [tok.eod], dtype=np.uint16), [len(ids) + 1])
    builder.finalize(prefix + ".idx")
    flags = [
        "--model",
        opts.model,
        "--micro-batch-size",
        str(opts.micro_batch_size),
        "--train-iters",
        str(opts.iters),
        "--data-path",
        prefix,
        "--split",
        "100,0,0",
        "--log-interval",
        str(10**9),
        "--lr",
        "1e-4",
        "--lr-decay-style",
        "cosine",
    ]

    ours, bare = [], []
    for run in (_ours, _bare, _bare, _ours):
        (ours if run is _ours else bare).extend(run(flags, tok, warmup))
    o, b = statistics.median(ours), statistics.median(bare)
    print(
        f"model {opts.model}, micro batch {opts.micro_batch_size}, seq {_config(flags).model.seq_length}, "
        f"2 x {opts.iters - warmup} timed steps each after {warmup} warm-up"
    )
    print(f"ours: {o * 1000:.2f} ms/step (median)   bare megatron-core: {b * 1000:.2f} ms/step   ratio {o / b:.3f}x")

    tiny = _config(["--model", "tiny", "--micro-batch-size", "2", "--train-iters", "1"]).model
    per_layer = 64 * (64 + 2 * 32) + 64 * 64 + 64 * 64 + 3 * 64 * 176
    expected = 6 * 4 * 64 * (2 * per_layer + 64 * 32000)
    got = callbacks.flops_per_iteration(tiny, global_batch_size=4, padded_vocab_size=32000)
    print(
        f"FLOPs/iteration (tiny, GBS 4): formula {got:.6e} vs hand count {expected:.6e} -> "
        f"{'match' if got == expected else 'MISMATCH'}"
    )


if __name__ == "__main__":
    main()
