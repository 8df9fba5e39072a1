"""Every difference between megatron-core releases that this package's code meets, in one place.

Supported: megatron-core 0.16.1 (the newest for Python 3.11) to 0.19.x (Python >= 3.12). Read from both wheels.

What CI checks (.ci/run, Python 3.11, torch 2.13.0 CPU): `make test` runs the whole suite on 0.16.1 (.venv), and
`make test-mcore-latest` runs tests/training, tests/convert and tests/evaluation, without the tests marked slow, on
0.19.2 (.venv-mcore: its cp311 wheel installed with --ignore-requires-python, plus triton, which `import
megatron.core` needs), after asserting that it imports 0.19.x. CI leaves the slow ones out for time;
`make test-mcore-latest MCORE_PYTEST=` runs them too.

Differences, and what we do about them
- Common (non-sharded) checkpoint state: 0.16.1 pickles it to `common.pt`; 0.19 stores it as a `common_state`
  ShardedObject inside the torch_dist files and reads it back with `torch.load(weights_only=True)`.
  0.19's `dist_checkpointing.load_common_state_dict` reads either. So what checkpoint.py puts there (and in its RNG
  objects) is plain tensors, numbers, strings, lists, tuples and dicts: numpy's RNG state is stored as a tensor.
  A checkpoint written with 0.16.1 loads with 0.19 (tested: the resumed losses match); one written with 0.19 does not
  load with 0.16.1, which looks for `common.pt`: `load_common_state` says so instead of a FileNotFoundError.
- Unpickling on load, the same in both: torch DCP's FileSystemReader reads `.metadata` with `pickle.load` and the
  bytes items (ShardedObjects) with `torch.load(weights_only=False)`, and 0.16.1 reads `common.pt` with
  `torch.load` (weights-only only by torch's default). Neither release lets a caller replace that reader, so
  checkpoint_files.verify reads those pickles first with restricted unpicklers, before megatron is handed the directory.
- `dist_checkpointing.save/load`: 0.19 drops the `common_strategy` argument and adds `async_strategy`,
  `verify_integrity`, `process_group`. We pass only the state dict and the directory.
- 0.19's synchronous save logs "MCore's async save is deprecated ..." (the sync path runs through the deprecated
  async implementation) and its GPTModel logs "GPTModel IS DEPRECATED ... HybridModel" (0.16.1 has no HybridModel).
  Neither is something a user of this package can act on: `quiet_internal_deprecations` filters exactly those two.
- `ChainedOptimizer.step()`: 0.19 adds per-group gradient norms and `OptimizerConfig.grad_norm_skip_threshold`
  (which a NaN norm never exceeds, so 0.19 too applies a NaN update). In both releases it calls
  `self.get_grad_norm()` after `prepare_grads()` and before clipping and updating, which is where
  callbacks/stability.py stops a step with a non-finite norm.
- `parallel_state.get_data_parallel_group/rank` gain `with_gtp_remat` (default True) and
  `initialize_model_parallel` gains `gtp_remat_size`, `rank_offset`, `local_world_size`; `get_gpt_layer_local_spec`
  loses `moe_use_legacy_grouped_gemm`; TransformerConfig loses `async_tensor_model_parallel_allreduce`,
  `moe_extended_tp`, `moe_use_legacy_grouped_gemm`; DistributedDataParallelConfig loses `preserve_fp32_weights`.
  We use none of these arguments, so the same calls work on both.
- The torch_dist files: 0.16.1 writes `__0_0.distcp` and `__0_1.distcp` for rank 0, plus `common.pt`; 0.19 writes
  one file per rank (`__0_0.distcp`, `__1_0.distcp`) and no `common.pt`. Nothing here names a shard file: the
  checksum list and checkpoint_files.verify take whatever the directory holds (the tests do likewise).
- Unchanged in both, relied on: the DistributedOptimizer sharding types ('fully_reshardable' is the reshardable
  one; 'fully_sharded_model_space' is listed but its flattened shards are rejected by dist_checkpointing), and the
  three gaps of its load path with torch's AdamW handled in checkpoint.py; `get_megatron_optimizer` returning a
  ChainedOptimizer; the schedules' and GPTModel's keyword arguments we pass; the CUDA calls cpu.py replaces.
"""

from __future__ import annotations

import logging
import os

from packaging.version import Version

TESTED = ("0.16.1", "0.19.2")

# Logger name -> message prefixes: megatron's notes about its own internals, on 0.19 and later.
_INTERNAL_DEPRECATIONS = {
    "megatron.core.dist_checkpointing.strategies.torch": ("MCore's async save is deprecated",),
    "megatron.core.models.gpt.gpt_model": ("GPTModel IS DEPRECATED",),
}


def mcore_version() -> Version:
    from megatron.core import package_info

    return Version(package_info.__version__)


class _DropMessages(logging.Filter):
    def __init__(self, prefixes):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_internal_deprecations() -> None:
    """Filter the two 0.19 log lines above (idempotent; nothing to filter on 0.16.1)."""
    if mcore_version() < Version("0.17"):
        return
    for name, prefixes in _INTERNAL_DEPRECATIONS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(prefixes))


def load_common_state(directory: str) -> dict:
    """`dist_checkpointing.load_common_state_dict`, with a clear error for a checkpoint too new for this release."""
    from megatron.core import dist_checkpointing

    if os.path.exists(os.path.join(directory, "common.pt")):
        return dist_checkpointing.load_common_state_dict(directory)
    try:
        return dist_checkpointing.load_common_state_dict(directory)
    except (FileNotFoundError, AttributeError):  # 0.16.1: no common.pt, then an AttributeError in its error path
        raise SystemExit(
            f"{directory} was written with a newer megatron-core, which keeps the common state inside "
            f"its torch_dist files (0.19 does); megatron-core {mcore_version()} reads only common.pt. "
            f"Load it with the megatron-core that wrote it (0.17 and newer need Python 3.12)"
        ) from None
