"""Throughput: the FLOP count behind TFLOP/s and MFU, step timing, and memory use."""

from __future__ import annotations

import resource
import time

import torch


def flops_per_iteration(model, global_batch_size: int, padded_vocab_size: int) -> float:
    """Megatron-LM's count for a dense GPT (`num_floating_point_operations` in megatron/training/training.py), for a
    config.ModelConfig: 3 (forward, weight-grad and data-grad GEMMs) x 2 (multiply-add) x tokens x [per layer: QKV and
    output projections, causal attention (QK^T and (QK^T)V, each half-masked), MLP (three matrices with SwiGLU, else
    two); plus the logits]."""
    h, s, layers = model.hidden_size, model.seq_length, model.num_layers
    kv_channels = model.kv_channels or h // model.num_attention_heads
    query = kv_channels * model.num_attention_heads
    key_value = 2 * kv_channels * model.num_query_groups
    projections = h * (query + key_value) + query * h
    attention = query * s / 2 * 2
    mlp = (3 if model.swiglu else 2) * h * model.ffn_hidden_size
    per_token = layers * (projections + attention + mlp) + h * padded_vocab_size
    return 3 * 2 * global_batch_size * s * per_token


# Dense BF16 tensor-core peaks (TFLOP/s, NVIDIA's datasheets, without sparsity), matched against the device name in
# this order (the PCIe and NVL boards are named "H100 PCIe"/"H100 NVL"; the SXM board is "H100 80GB HBM3").
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0))


def peak_bf16_tflops(device_name: str):
    """The dense BF16 peak of a GPU from its name (torch.cuda.get_device_name), or None for one not in the table."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops
    return None


def rates(flops: float, tokens: int, step_time: float, world_size: int, peak_tflops: float) -> dict:
    """Per-GPU tokens/s and TFLOP/s of one step of `flops` over `tokens`, and MFU against `peak_tflops`."""
    tflops = flops / step_time / 1e12 / world_size
    return {
        "tokens_per_sec_per_gpu": tokens / step_time / world_size,
        "tflops_per_gpu": tflops,
        "mfu": tflops / peak_tflops,
    }


def memory_stats() -> dict:
    """Bytes in use. On GPU the allocator's figures under Megatron-LM's TensorBoard names; without a GPU the
    process's resident set under names of its own (host memory is not what Megatron's mem-* scalars measure)."""
    if torch.cuda.is_available():
        return {
            "mem-reserved-bytes": torch.cuda.memory_reserved(),
            "mem-allocated-bytes": torch.cuda.memory_allocated(),
            "mem-max-allocated-bytes": torch.cuda.max_memory_allocated(),
            "mem-allocated-count": torch.cuda.memory_stats().get("allocation.all.current", 0),
        }
    import psutil

    rss = psutil.Process().memory_info().rss
    return {
        "host-rss-bytes": rss,  # ru_maxrss is in KiB on Linux and may lag the current figure by a few pages
        "host-max-rss-bytes": max(rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
    }


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.perf_counter() - self.start
