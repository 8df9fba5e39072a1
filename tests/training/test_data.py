"""Data guards for what hangs or misleads in Megatron: an empty split, and an index cache built from other files."""

import os

import pytest

from megatron_ipt.training import data


def test_empty_split_is_an_error_not_a_hang(corpus):
    with pytest.raises(ValueError, match="test split .* holds 0 of 120 sequences"):
        data.check_splits_not_empty([corpus], "969,30,1", [8, 8, 8])
    data.check_splits_not_empty([corpus], "969,30,1", [8, 8, 0])


def test_split_weights_are_normalized():
    assert data.parse_split("90,10,0") == [0.9, 0.1, 0.0]
    assert data.parse_split("99,1") == [0.99, 0.01, 0.0]
    with pytest.raises(ValueError, match="no positive weight"):
        data.parse_split("0,0,0")


def test_stale_index_cache_is_rebuilt(corpus, tmp_path):
    cache = str(tmp_path / "cache")
    assert data.ensure_fresh_cache(cache, [corpus]) is False
    open(os.path.join(cache, "x-GPTDataset-train-shuffle_index.npy"), "w").close()
    assert data.ensure_fresh_cache(cache, [corpus]) is False  # same files: cache kept
    assert os.listdir(cache) != ["source-files.json"]
    os.utime(corpus + ".bin", ns=(1, 1))  # the .bin changed under the same prefix
    assert data.ensure_fresh_cache(cache, [corpus]) is True
    assert os.listdir(cache) == ["source-files.json"]
