"""Data guards for what hangs or misleads in Megatron: an empty split, and an index cache built from other files."""

import os

import pytest

from megatron_ipt.training import datasets


def test_empty_split_is_an_error_not_a_hang(corpus):
    # 969,30,1 on 120 documents: the test part, round(0.999 * 120) .. 120, holds none
    with pytest.raises(SystemExit, match="8 test samples are asked of the empty test part"):
        datasets.plan_splits([corpus], "969,30,1", [8, 8, 8])
    matrix, notes = datasets.plan_splits([corpus], "969,30,1", [8, 8, 0])  # none asked: left unbuilt instead
    assert matrix[2] is None and "the test part of" in notes[0]


def test_split_weights_are_normalized():
    assert datasets.split_matrix("90,10,0") == [(0, 0.9), (0.9, 1.0), None]
    assert datasets.split_matrix("99,1") == [(0, 0.99), (0.99, 1.0), None]
    with pytest.raises(SystemExit, match="no positive weight"):
        datasets.split_matrix("0,0,0")


def test_stale_index_cache_is_rebuilt(corpus, tmp_path):
    cache = str(tmp_path / "cache")
    assert datasets.ensure_fresh_cache(cache, [corpus]) is False
    open(os.path.join(cache, "x-GPTDataset-train-shuffle_index.npy"), "w").close()
    assert datasets.ensure_fresh_cache(cache, [corpus]) is False  # same files: cache kept
    assert os.listdir(cache) != ["source-files.json"]
    os.utime(corpus + ".bin", ns=(1, 1))  # the .bin changed under the same prefix
    assert datasets.ensure_fresh_cache(cache, [corpus]) is True
    assert os.listdir(cache) == ["source-files.json"]
