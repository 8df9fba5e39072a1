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

from megatron_ipt.formats import indexed
from megatron_ipt.io.atomic import write_json_atomic
from megatron_ipt.training import parallel
from megatron_ipt.training.errors import TrainingInputError

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
        except (OSError, ValueError):  # our token-id cache (keyed by file stamps itself) is no sign of staleness
            stale = bool(set(os.listdir(cache_dir)) - {TOKEN_IDS_FILE})
        if stale:
            shutil.rmtree(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    write_json_atomic(stamp_path, stamp)
    return stale


def requested_samples(run, iteration: int = 0) -> List[int]:
    """Samples asked of each split part (see build_datasets) by a run that starts after `iteration` iterations: the
    training samples are those of its phase (the whole run without --phase-transition-iterations)."""
    config, gbs = run.config, run.global_batch_size
    evals = (run.train_iters // config.logging.eval_interval + 1) if config.logging.eval_interval else 0
    first, end = run.phase(iteration)
    return [(end - first) * gbs, evals * config.logging.eval_iters * gbs, 0]


def check_split(run) -> None:
    """The split guard alone, before anything is built (tools/pretrain.py calls it first): SystemExit if samples are
    asked of an empty part of `--split`."""
    if not run.config.data.mock_data and run.config.data.data_path:
        plan_splits(get_blend_from_list(run.config.data.data_path)[0], run.config.data.split, requested_samples(run))


def gpt_dataset_config(run, tokenizer, blend=None, cache_dir=None, matrix=None, *, eod_mask_loss: bool):
    """megatron-core's GPTDatasetConfig for a run, one for both dataset paths: pre-training's (GPTDataset,
    MockGPTDataset: `blend` None) and `--loss-mask-data`'s (loss_mask_data.TuningDataset, whose own loss mask replaces
    --eod-mask-loss). `blend`, `cache_dir` and `matrix` as prepare_blend gives them."""
    config = run.config
    built = GPTDatasetConfig(
        blend=blend,
        split=config.data.split if blend else None,
        path_to_cache=cache_dir,
        random_seed=config.init.seed,
        sequence_length=config.model.seq_length,
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=eod_mask_loss,
        create_attention_mask=config.data.create_attention_mask_in_dataloader,
        mmap_bin_files=config.data.mmap_bin_files,
        num_dataset_builder_threads=config.data.num_dataset_builder_threads,
    )
    if matrix is not None:
        built.split_matrix = matrix  # without the empty parts no sample is asked of (plan_splits)
    return built


def prepare_blend(run, prefixes: List[str], sizes: List[int], stamped: Optional[List[str]] = None):
    """The split matrix for `sizes` samples of the `--data-path` blend `prefixes` and its index cache directory,
    made fresh on rank 0 (every rank waits for it) and checked (check_index_cache). `stamped`: the prefixes whose
    `.bin/.idx` the cache depends on, `prefixes` without it."""
    matrix, notes = plan_splits(prefixes, run.config.data.split, sizes)
    cache_dir = index_cache_dir(run.config.data.data_cache_path, prefixes)
    if torch.distributed.get_rank() == 0:
        for note in notes:
            print(note, flush=True)
        if ensure_fresh_cache(cache_dir, prefixes if stamped is None else stamped):
            print(f"data index cache {cache_dir} did not match its .bin/.idx files: rebuilt", flush=True)
    torch.distributed.barrier()
    check_index_cache(cache_dir)  # megatron-core unpickles what it finds there: plain integer arrays only
    # Rank 0 writes new index files as soon as megatron-core's builder starts: no rank may still be reading them.
    torch.distributed.barrier()
    return matrix, cache_dir


def build_datasets(run, tokenizer, iteration: int = 0):
    """Train/valid/test datasets for a run (a config.ResolvedConfig) that starts after `iteration` iterations; blends
    from `--data-path`, or synthetic tokens with `--mock-data`. Sized as Megatron-LM's
    `get_train_valid_test_num_samples` (megatron/training/training.py) sizes them: train_iters x global batch
    training samples (with --phase-transition-iterations, the current phase's iterations x global batch) and
    (train_iters // eval_interval + 1) x eval_iters x global batch validation samples; no test samples (the loop has
    no test pass). Returns (train, valid, test, the data sources' names)."""
    sizes = requested_samples(run, iteration)
    eod_mask_loss = run.config.data.eod_mask_loss
    if run.config.data.mock_data:
        mock = gpt_dataset_config(run, tokenizer, eod_mask_loss=eod_mask_loss)
        train, valid, test = BlendedMegatronDatasetBuilder(MockGPTDataset, sizes, lambda: True, mock).build()
        return train, valid, test, ["mock"]
    prefixes, weights = get_blend_from_list(run.config.data.data_path)
    matrix, cache_dir = prepare_blend(run, prefixes, sizes)
    blended = gpt_dataset_config(run, tokenizer, (prefixes, weights), cache_dir, matrix, eod_mask_loss=eod_mask_loss)
    train, valid, test = BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, blended).build()
    return train, valid, test, [os.path.basename(p) for p in prefixes]


class MegatronTokenizerAdapter:
    """What GPTDatasetConfig reads from a tokenizer, over megatron_ipt.tokenizers."""

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


# -- Input checks (issue 13): a dataset, its token ids and the index cache are checked before megatron-core opens
# them, so a corrupt or mismatched file is one TrainingInputError naming it instead of a rank traceback, a hang or a
# run that trains on garbage (ids past the vocabulary train at TP>1 with a frozen loss). ------------------------------

TOKEN_IDS_FILE = "token-ids.json"  # in the index cache directory: each .bin's id range, keyed by the files' stamps
_SCAN_CHUNK = 1 << 24  # tokens per step of the id scan (32 MiB of uint16): bounded memory on any .bin


def index_cache_dir(data_cache_path: Optional[str], prefixes: List[str]) -> str:
    """Where megatron-core's index cache for these prefixes lives: --data-cache-path, else index-cache/ next to the
    first prefix."""
    return data_cache_path or os.path.join(os.path.dirname(os.path.abspath(prefixes[0])), "index-cache")


def check_dataset(prefix: str) -> dict:
    """What megatron-core's IndexedDataset would trip on (with an assertion, a numpy error or not at all), checked
    first: both files present, then formats.indexed.check_dataset (the index, the token dtype, the `.bin`'s length,
    at least one token). Raises TrainingInputError naming the file; returns {"dtype", "sequences", "documents",
    "tokens"}."""
    idx, bin_ = prefix + ".idx", prefix + ".bin"
    missing = [path for path in (idx, bin_) if not os.path.isfile(path)]
    if len(missing) == 2:
        raise TrainingInputError(f"--data-path {prefix}: no dataset there ({idx} and {bin_} do not exist)")
    if missing:
        other = bin_ if missing[0] == idx else idx
        raise TrainingInputError(f"{missing[0]} does not exist, but {other} does: a dataset is a .bin/.idx pair")
    try:
        return indexed.check_dataset(prefix)
    except indexed.IndexFormatError as e:
        raise TrainingInputError(str(e)) from None


def _stamp_of(prefix: str) -> list:
    return [[st.st_size, st.st_mtime_ns] for st in (os.stat(prefix + ".bin"), os.stat(prefix + ".idx"))]


def scan_token_ids(prefix: str, dtype, tokens: int) -> Tuple[int, int]:
    """(smallest, largest) token id in `prefix.bin`'s first `tokens` tokens, read in bounded chunks."""
    ids = np.memmap(prefix + ".bin", dtype, "r", shape=(tokens,))
    low, high = None, None
    for start in range(0, tokens, _SCAN_CHUNK):
        chunk = ids[start : start + _SCAN_CHUNK]
        low = chunk.min() if low is None else min(low, chunk.min())
        high = chunk.max() if high is None else max(high, chunk.max())
    return int(low), int(high)


def token_id_range(prefix: str, cache_dir: str, dtype, tokens: int) -> Tuple[int, int]:
    """`scan_token_ids`, cached in `cache_dir/token-ids.json` (plain JSON) under the .bin/.idx sizes and mtimes, so
    a rerun on the same files does not read the .bin again."""
    path = os.path.join(cache_dir, TOKEN_IDS_FILE)
    key, stamp = os.path.abspath(prefix), _stamp_of(prefix)
    try:
        with open(path) as f:
            cached = json.load(f)
        entry = cached.get(key) if isinstance(cached, dict) else None
    except (OSError, ValueError):
        cached, entry = {}, None
    if isinstance(entry, dict) and entry.get("stamp") == stamp:
        return entry["min"], entry["max"]
    low, high = scan_token_ids(prefix, dtype, tokens)
    cached = cached if isinstance(cached, dict) else {}
    cached[key] = {"stamp": stamp, "min": low, "max": high}
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"  # one per process: ranks of several nodes may write it at once
    with open(tmp, "w") as f:
        json.dump(cached, f, indent=1)
    os.replace(tmp, path)
    return low, high


def check_token_ids(prefix: str, cache_dir: str, vocab_size: int, tokenizer: str, info: dict) -> None:
    """Every id of `prefix` in [0, vocab_size): an id past the model's vocabulary fails with an IndexError at TP=1
    and silently trains a frozen loss at TP>1 (the vocab-parallel embedding masks it)."""
    low, high = token_id_range(prefix, cache_dir, info["dtype"], info["tokens"])
    if high >= vocab_size or low < 0:
        bad = f"max id {high}" if high >= vocab_size else f"min id {low}"
        raise TrainingInputError(
            f"{prefix}: token {bad} is outside the vocabulary of {vocab_size} ({tokenizer}): the dataset was "
            "tokenized with another tokenizer (or --vocab-size is too small)"
        )


def check_index_cache(cache_dir: str) -> None:
    """megatron-core loads its index cache with numpy.load(allow_pickle=True): an object array in a `.npy` there
    would run code when unpickled. Its own files are plain integer arrays; anything else is refused, header read
    only (nothing unpickled)."""
    if not os.path.isdir(cache_dir):
        return
    for name in sorted(os.listdir(cache_dir)):
        if not name.endswith(".npy"):
            continue
        path = os.path.join(cache_dir, name)
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                _, _, dtype = read[version](f)
        except (OSError, ValueError, KeyError, SyntaxError) as error:
            raise TrainingInputError(f"{path}: not a plain .npy index file ({error}); delete it") from None
        if dtype.hasobject or dtype.kind not in "biu":
            raise TrainingInputError(
                f"{path}: index cache file holds {dtype} data, not integers (megatron-core would unpickle it); "
                "refusing to load it: delete it"
            )


def check_data(run, cache_dir: Optional[str] = None, scan_ids: bool = True) -> None:
    """Every input check above, for a run's `--data-path` (nothing with --mock-data): structure, token ids against
    the model's vocabulary (when `scan_ids`), and the index cache. TrainingInputError on the first problem."""
    config = run.config
    if config.data.mock_data or not config.data.data_path:
        return
    prefixes = get_blend_from_list(config.data.data_path)[0]
    cache_dir = cache_dir or index_cache_dir(config.data.data_cache_path, prefixes)
    spec = config.data.tokenizer
    tokenizer = (spec.model or f"{spec.type} --vocab-size {spec.vocab_size}") if spec else "no tokenizer"
    for prefix in prefixes:
        info = check_dataset(prefix)
        if scan_ids:
            check_token_ids(prefix, cache_dir, config.model.vocab_size, tokenizer, info)
    check_index_cache(cache_dir)
