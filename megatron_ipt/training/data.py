"""GPT data through megatron.core.datasets, with guards for what hangs or misleads in Megatron.

Guards: (1) a split that rounds to zero sequences while samples are requested makes Megatron loop forever, so we
count sequences per split first and raise naming the prefix; (2) Megatron's index cache is keyed by settings, not
by file contents, so a rebuilt `.bin/.idx` silently reuses stale indices: we stamp each cache directory with the
sizes and mtimes of the files it was built from and rebuild it when they change.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Iterator, List

import numpy as np
import torch
from megatron.core import parallel_state
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.utils import get_blend_from_list

from megatron_ipt.io.atomic import write_json_atomic

SPLIT_NAMES = ("train", "valid", "test")


def parse_split(split: str) -> List[float]:
    import re

    parts = [float(x) for x in re.findall(r"[.0-9]+", split)]
    parts = (parts + [0.0, 0.0, 0.0])[:3]
    total = sum(parts)
    if total <= 0:
        raise ValueError(f"--split {split!r} has no positive weight")
    return [p / total for p in parts]


def check_splits_not_empty(prefixes: List[str], split: str, sizes: List[int]) -> None:
    weights = parse_split(split)
    bounds = np.cumsum([0.0] + weights)
    for prefix in prefixes:
        n = len(IndexedDataset(prefix))
        for i, name in enumerate(SPLIT_NAMES):
            count = int(round(bounds[i + 1] * n)) - int(round(bounds[i] * n))
            if sizes[i] > 0 and count == 0:
                raise ValueError(
                    f"{prefix}: the {name} split of --split {split!r} holds 0 of {n} sequences but "
                    f"{sizes[i]} {name} samples are requested (Megatron would hang); change --split "
                    f"or the eval settings"
                )


def _stamp(prefixes: List[str]) -> dict:
    stamp = {}
    for prefix in prefixes:
        for ext in (".bin", ".idx"):
            st = os.stat(prefix + ext)
            stamp[prefix + ext] = [st.st_size, st.st_mtime_ns]
    return stamp


def ensure_fresh_cache(cache_dir: str, prefixes: List[str]) -> bool:
    """Delete `cache_dir` if it was built from different `.bin/.idx` files. Returns True if it was rebuilt."""
    stamp_path = os.path.join(cache_dir, "source-files.json")
    stamp = _stamp(prefixes)
    stale = False
    if os.path.isdir(cache_dir):
        try:
            with open(stamp_path) as f:
                stale = json.load(f) != stamp
        except (OSError, ValueError):
            stale = bool(os.listdir(cache_dir))
        if stale:
            shutil.rmtree(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    write_json_atomic(stamp_path, stamp)
    return stale


def build_datasets(run, tokenizer):
    """Train/valid/test datasets for a run (a config.ResolvedConfig); blends from `--data-path`. Sized as Megatron-LM's
    `get_train_valid_test_num_samples` (megatron/training/training.py) sizes them: train_iters x global batch
    training samples and (train_iters // eval_interval + 1) x eval_iters x global batch validation samples; no test
    samples (the loop has no test pass)."""
    config, gbs = run.config, run.global_batch_size
    prefixes, weights = get_blend_from_list(config.data.data_path)
    evals = (run.train_iters // config.logging.eval_interval + 1) if config.logging.eval_interval else 0
    sizes = [run.train_iters * gbs, evals * config.logging.eval_iters * gbs, 0]
    check_splits_not_empty(prefixes, config.data.split, sizes)
    cache_dir = config.data.data_cache_path or os.path.join(
        os.path.dirname(os.path.abspath(prefixes[0])), "index-cache"
    )
    if torch.distributed.get_rank() == 0:
        if ensure_fresh_cache(cache_dir, prefixes):
            print(f"data index cache {cache_dir} did not match its .bin/.idx files: rebuilt", flush=True)
    torch.distributed.barrier()
    dataset_config = GPTDatasetConfig(
        random_seed=config.init.seed,
        sequence_length=config.model.seq_length,
        blend=(prefixes, weights),
        split=config.data.split,
        path_to_cache=cache_dir,
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=config.data.eod_mask_loss,
        create_attention_mask=config.data.create_attention_mask_in_dataloader,
        mmap_bin_files=config.data.mmap_bin_files,
        num_dataset_builder_threads=config.data.num_dataset_builder_threads,
    )
    train, valid, test = BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, dataset_config).build()
    return train, valid, test, len(prefixes)


class MegatronTokenizerAdapter:
    """What GPTDatasetConfig reads from a tokenizer, over megatron_ipt.data.tokenizer."""

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self.vocab_size = tokenizer.vocab_size
        self.eod = tokenizer.eod
        self.pad = None
        ids = tokenizer.unique_identifiers
        self.unique_identifiers = ids() if callable(ids) else ids


def batches(dataset, consumed_samples: int, micro_batch_size: int) -> Iterator[dict]:
    """Megatron's `single` sampler: sequential from consumed_samples; each DP rank takes its slice of every
    micro_batch_size x DP chunk. Wraps around if the dataset is exhausted (eval iterators)."""
    dp_rank = parallel_state.get_data_parallel_rank()
    dp = parallel_state.get_data_parallel_world_size()
    index = consumed_samples
    while True:
        start = index + dp_rank * micro_batch_size
        samples = [dataset[(start + j) % len(dataset)] for j in range(micro_batch_size)]
        index += micro_batch_size * dp
        yield {
            key: torch.stack([torch.as_tensor(s[key]) for s in samples])
            for key in ("tokens", "labels", "loss_mask", "position_ids", "attention_mask", "dataset_id")
            if key in samples[0]
        }
