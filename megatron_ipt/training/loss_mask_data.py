"""Training data for `--loss-mask-data`: packed tuning sequences with a loss mask (the synthesizer's tuning recipe,
docs/tuning.md), through megatron.core's dataset builder so `--data-path` blends and `--split` work as in
pre-training.

On disk (tools/build_tuning_data.py writes it): for each prefix `P`, `P_text_document.{bin,idx}` holds token ids and
`P_loss_mask_document.{bin,idx}` holds uint8 0/1 with the same document lengths. One document is one packed
sequence of at most `--seq-length` + 1 tokens (several examples of one source dataset, few-shot); `mask[i] = 1`
iff token i is a target that carries loss. `--data-path` names the `P_text_document` prefixes, as for pre-training.

A sample is exactly one document: tokens = doc[:-1], labels = doc[1:], loss_mask = mask[1:], each padded to
`--seq-length` with loss mask 0 (never concatenated with the next document, unlike GPTDataset, so one sequence's
examples never see another's). Positions start at 0 in every sample; padding sits after the document, so under the
causal mask no real token attends to it. Documents are visited in a fresh seeded permutation each epoch.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.megatron_dataset import MegatronDataset
from megatron.core.datasets.utils import get_blend_from_list

from megatron_ipt.formats.indexed import MASK_SUFFIX, TEXT_SUFFIX, mask_prefix_of


def mask_prefix(text_prefix: str) -> str:
    """`P_text_document` -> `P_loss_mask_document`."""
    masks = mask_prefix_of(text_prefix)
    if masks is None:
        raise SystemExit(
            f"--loss-mask-data: --data-path prefix {text_prefix!r} must end in {TEXT_SUFFIX} (its loss mask is "
            f"the {MASK_SUFFIX} beside it, as tools/build_tuning_data.py writes them)"
        )
    return masks


def check_prefixes(data_path, seq_length: int) -> None:
    """Every prefix of the blend has its loss mask, with the same documents, none longer than `seq_length` + 1, and
    a mask of 0/1 uint8. SystemExit with one line naming the file otherwise (tools/pretrain.py calls it on every
    rank before anything is built, so no rank waits on one that stopped)."""
    from megatron_ipt.formats import indexed

    for prefix in get_blend_from_list(list(data_path))[0]:
        masks = mask_prefix(prefix)
        for path in (prefix, masks):
            for ext in (".bin", ".idx"):
                if not os.path.isfile(path + ext):
                    raise SystemExit(f"--loss-mask-data: {path + ext} does not exist")
        try:  # the mask pair as data.check_dataset checks the text's: a .bin of exactly the size its .idx says
            indexed.check_dataset(masks)
        except indexed.IndexFormatError as e:
            raise SystemExit(f"--loss-mask-data: {e}") from None
        text, mask = IndexedDataset(prefix), IndexedDataset(masks)
        if mask.index.dtype != np.uint8:
            raise SystemExit(f"--loss-mask-data: {masks}.idx holds {mask.index.dtype.__name__}, expected uint8 0/1")
        if not np.array_equal(text.sequence_lengths, mask.sequence_lengths):
            raise SystemExit(
                f"--loss-mask-data: {masks} does not match {prefix}: {len(mask.sequence_lengths)} vs "
                f"{len(text.sequence_lengths)} documents, or different lengths (rebuild both with one run of "
                "tools/build_tuning_data.py)"
            )
        longest = int(text.sequence_lengths.max()) if len(text.sequence_lengths) else 0
        if longest > seq_length + 1:
            raise SystemExit(
                f"--loss-mask-data: {prefix} holds a sequence of {longest} tokens, longer than --seq-length "
                f"{seq_length} + 1: pack it again with tools/build_tuning_data.py --seq-length {seq_length} (or train "
                "with a longer --seq-length)"
            )


class _TextAndMask:
    """The low-level dataset: the token and loss-mask indexed datasets of one prefix, document by document."""

    def __init__(self, prefix: str, mmap: bool):
        self.text = IndexedDataset(prefix, mmap=mmap)
        self.mask = IndexedDataset(mask_prefix(prefix), mmap=mmap)

    def __len__(self) -> int:
        return len(self.text.sequence_lengths)


class TuningDataset(MegatronDataset):
    """One packed tuning sequence per sample (see the module docstring); config is a GPTDatasetConfig."""

    def __init__(self, dataset, dataset_path, indices, num_samples, index_split, config):
        super().__init__(dataset, dataset_path, indices, num_samples, index_split, config)
        documents = len(indices)
        if documents == 0:
            self.sample_index = np.zeros(0, dtype=np.int64)
            return
        epochs = 1 if not num_samples else -(-num_samples // documents)
        # a fresh permutation each epoch (seeded by the run's seed and this part of the split, so valid and train
        # differ); cheap enough to compute at start-up that no cache file is needed
        rng = np.random.RandomState((config.random_seed, index_split.value))
        self.sample_index = np.concatenate([indices[rng.permutation(documents)] for _ in range(epochs)])

    @staticmethod
    def numel_low_level_dataset(low_level_dataset: _TextAndMask) -> int:
        return len(low_level_dataset)

    @staticmethod
    def build_low_level_dataset(dataset_path: str, config: GPTDatasetConfig) -> _TextAndMask:
        return _TextAndMask(dataset_path, config.mmap_bin_files)

    def __len__(self) -> int:
        return len(self.sample_index)

    def __getitem__(self, idx: Optional[int]) -> dict:
        document = int(self.sample_index[0 if idx is None else idx])
        tokens = self.dataset.text.get(document).astype(np.int64)
        mask = self.dataset.mask.get(document).astype(np.float32)
        s = self.config.sequence_length
        n = len(tokens) - 1  # input positions; targets are the next tokens
        sample_tokens = np.zeros(s, dtype=np.int64)
        labels = np.zeros(s, dtype=np.int64)
        loss_mask = np.zeros(s, dtype=np.float32)
        if n > 0:
            sample_tokens[:n], labels[:n], loss_mask[:n] = tokens[:-1], tokens[1:], mask[1:]
        if idx is None:  # megatron's padding sample: no loss
            loss_mask[:] = 0.0
        sample = {
            "tokens": torch.from_numpy(sample_tokens),
            "labels": torch.from_numpy(labels),
            "loss_mask": torch.from_numpy(loss_mask),
            "position_ids": torch.arange(s, dtype=torch.int64),
        }
        if self.config.create_attention_mask:
            sample["attention_mask"] = ~torch.tril(torch.ones((1, s, s), dtype=torch.bool))  # True: masked out
        return sample


def build_datasets(run, tokenizer, iteration: int = 0):
    """Train/valid/test TuningDatasets for a run with `--loss-mask-data` that starts after `iteration` iterations: the
    blend and split of `--data-path` and `--split`, sized as training/datasets.py sizes pre-training's. Returns
    (train, valid, test, the sources' names)."""
    from megatron_ipt.training import datasets

    sizes = datasets.requested_samples(run, iteration)
    prefixes, weights = get_blend_from_list(list(run.config.data.data_path))
    masks = [mask_prefix(p) for p in prefixes]  # the loss masks beside the text: the index cache depends on both
    matrix, cache_dir = datasets.prepare_blend(run, prefixes, sizes, stamped=prefixes + masks)
    # the cache holds the blend's indices (BlendedDataset); TuningDataset itself caches nothing, and its loss mask
    # comes from the mask files, not from eod_mask_loss
    dataset_config = datasets.gpt_dataset_config(
        run, tokenizer, (prefixes, weights), cache_dir, matrix, eod_mask_loss=False
    )
    train, valid, test = BlendedMegatronDatasetBuilder(TuningDataset, sizes, lambda: True, dataset_config).build()
    return train, valid, test, [os.path.basename(p) for p in prefixes]
