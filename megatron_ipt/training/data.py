"""GPT data through megatron.core.datasets, with guards for what hangs or misleads in Megatron.

Guards: (1) megatron-core builds every part of `--split` with a positive weight, and a part that holds no tokens makes
`GPTDataset._get_num_epochs` loop for ever, even when no sample is asked of it (it always wants one token more than
the samples need): the 1/1000 test part of Megatron's usual `969,30,1` or `949,50,1` is empty on a corpus under
~500 documents. `plan_splits` counts each part's documents and tokens first: an empty part no sample is asked of is
left unbuilt (what a zero weight would do, without moving the other parts' boundaries), and one that samples are
asked of stops the run with a one-line message naming the split, what each part gets, and what to change. (2)
Megatron's index cache is keyed by settings, not by file contents, so a rebuilt `.bin/.idx` silently reuses stale
indices: we stamp each cache directory with the sizes and mtimes of the files it was built from and rebuild it when
they change. `--mock-data` builds megatron-core's MockGPTDataset instead (synthetic tokens, no files).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
from megatron.core import parallel_state
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.blended_megatron_dataset_config import (
    convert_split_vector_to_split_matrix,
    parse_and_normalize_split,
)
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig, MockGPTDataset
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.utils import get_blend_from_list

from megatron_ipt.io.atomic import write_json_atomic
from megatron_ipt.training import parallel

SPLIT_NAMES = ("train", "valid", "test")


def split_matrix(split: str) -> List[Optional[Tuple[float, float]]]:
    """megatron-core's reading of `--split`: each part's (begin, end) fraction of the documents, None for a zero
    weight."""
    try:
        vector = parse_and_normalize_split(split)
    except (AssertionError, ValueError, ZeroDivisionError):
        raise SystemExit(f"--split {split!r}: expected up to three non-negative weights, e.g. 969,30,1") from None
    if not sum(vector) > 0:
        raise SystemExit(f"--split {split!r} has no positive weight")
    return convert_split_vector_to_split_matrix(vector)


def part_sizes(prefix: str, matrix) -> List[Optional[Tuple[int, int]]]:
    """(documents, tokens) of each part of `prefix` as megatron-core cuts it (rounded document boundaries)."""
    dataset = IndexedDataset(prefix)  # held while its memory-mapped lengths are read (it unmaps them when freed)
    lengths = dataset.sequence_lengths
    n = len(lengths)
    sizes = []
    for bounds in matrix:
        if bounds is None:
            sizes.append(None)
            continue
        begin, end = (int(round(bound * float(n))) for bound in bounds)
        sizes.append((end - begin, int(np.sum(lengths[begin:end], dtype=np.int64))))
    return sizes


def plan_splits(prefixes: List[str], split: str, samples: List[int]) -> Tuple[list, List[str]]:
    """The split matrix to build (parts that hold no tokens and are asked no samples left out) and a note for each
    part left out. Raises SystemExit, one line, when samples are asked of a part that holds no tokens: megatron-core
    would wait for ever."""
    matrix = split_matrix(split)
    notes = []
    for prefix in prefixes:
        sizes = part_sizes(prefix, matrix)
        for i, name in enumerate(SPLIT_NAMES):
            if sizes[i] is None or sizes[i][1] > 0 or matrix[i] is None:
                continue
            if samples[i] == 0:
                matrix[i] = None
                notes.append(f"--split {split}: the {name} part of {prefix} is empty ({_describe(sizes)}); not built")
                continue
            fix = f"give the {name} part more weight in --split or use a larger corpus"
            if name == "valid":
                fix += ", or run without --eval-interval"
            raise SystemExit(
                f"--split {split} on {prefix}: {_describe(sizes)}, but {samples[i]} {name} samples are asked of the "
                f"empty {name} part (megatron-core would wait for ever); {fix}"
            )
    return matrix, notes


def _describe(sizes) -> str:
    return ", ".join(
        f"{name} none (weight 0)" if size is None else f"{name} {size[0]} documents / {size[1]} tokens"
        for name, size in zip(SPLIT_NAMES, sizes)
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


def requested_samples(run) -> List[int]:
    """Samples asked of each split part (see build_datasets)."""
    config, gbs = run.config, run.global_batch_size
    evals = (run.train_iters // config.logging.eval_interval + 1) if config.logging.eval_interval else 0
    return [run.train_iters * gbs, evals * config.logging.eval_iters * gbs, 0]


def check_split(run) -> None:
    """The split guard alone, before anything is built (tools/pretrain.py calls it first): SystemExit if samples are
    asked of an empty part of `--split`."""
    if not run.config.data.mock_data and run.config.data.data_path:
        plan_splits(get_blend_from_list(run.config.data.data_path)[0], run.config.data.split, requested_samples(run))


def build_datasets(run, tokenizer):
    """Train/valid/test datasets for a run (a config.ResolvedConfig); blends from `--data-path`, or synthetic tokens
    with `--mock-data`. Sized as Megatron-LM's `get_train_valid_test_num_samples` (megatron/training/training.py)
    sizes them: train_iters x global batch training samples and (train_iters // eval_interval + 1) x eval_iters x
    global batch validation samples; no test samples (the loop has no test pass). Returns (train, valid, test, the
    data sources' names)."""
    config = run.config
    sizes = requested_samples(run)
    common = dict(
        random_seed=config.init.seed,
        sequence_length=config.model.seq_length,
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=config.data.eod_mask_loss,
        create_attention_mask=config.data.create_attention_mask_in_dataloader,
        mmap_bin_files=config.data.mmap_bin_files,
        num_dataset_builder_threads=config.data.num_dataset_builder_threads,
    )
    if config.data.mock_data:
        dataset_config = GPTDatasetConfig(blend=None, split=None, path_to_cache=None, **common)
        train, valid, test = BlendedMegatronDatasetBuilder(MockGPTDataset, sizes, lambda: True, dataset_config).build()
        return train, valid, test, ["mock"]
    prefixes, weights = get_blend_from_list(config.data.data_path)
    matrix, notes = plan_splits(prefixes, config.data.split, sizes)
    cache_dir = config.data.data_cache_path or os.path.join(
        os.path.dirname(os.path.abspath(prefixes[0])), "index-cache"
    )
    if torch.distributed.get_rank() == 0:
        for note in notes:
            print(note, flush=True)
        if ensure_fresh_cache(cache_dir, prefixes):
            print(f"data index cache {cache_dir} did not match its .bin/.idx files: rebuilt", flush=True)
    torch.distributed.barrier()
    dataset_config = GPTDatasetConfig(
        blend=(prefixes, weights), split=config.data.split, path_to_cache=cache_dir, **common
    )
    dataset_config.split_matrix = matrix  # without the empty parts no sample is asked of (plan_splits)
    train, valid, test = BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, dataset_config).build()
    return train, valid, test, [os.path.basename(p) for p in prefixes]


class MegatronTokenizerAdapter:
    """What GPTDatasetConfig reads from a tokenizer, over megatron_ipt.data.tokenizer."""

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self.vocab_size = tokenizer.vocab_size
        self.eod = tokenizer.eod
        self.pad = None
        ids = tokenizer.unique_identifiers
        self.unique_identifiers = ids() if callable(ids) else ids


class MockTokenizer:
    """What MockGPTDataset reads of a tokenizer, for `--mock-data` without one: ids below `vocab_size`, the last id
    as end of document (as Megatron-LM's NullTokenizer)."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.eod = vocab_size - 1
        self.pad = None
        self.unique_identifiers = {"class": type(self).__name__, "vocab_size": vocab_size}


def batches(dataset, consumed_samples: int, micro_batch_size: int) -> Iterator[dict]:
    """Megatron's `single` sampler: sequential from consumed_samples; each DP rank takes its slice of every
    micro_batch_size x DP chunk. Wraps around if the dataset is exhausted (eval iterators). Batches are on this rank's
    device (its GPU on CUDA, as Megatron-LM's get_batch puts them)."""
    target = parallel.device()
    dp_rank = parallel_state.get_data_parallel_rank()
    dp = parallel_state.get_data_parallel_world_size()
    index = consumed_samples
    while True:
        start = index + dp_rank * micro_batch_size
        samples = [dataset[(start + j) % len(dataset)] for j in range(micro_batch_size)]
        index += micro_batch_size * dp
        yield {
            key: torch.stack([torch.as_tensor(s[key]) for s in samples]).to(target, non_blocking=True)
            for key in ("tokens", "labels", "loss_mask", "position_ids", "attention_mask", "dataset_id")
            if key in samples[0]
        }
