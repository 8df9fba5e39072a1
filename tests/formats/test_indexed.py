"""The native builder against megatron-core's own IndexedDatasetBuilder and IndexedDataset."""

import filecmp
import os

import numpy as np
import psutil
import pytest
from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, IndexedDatasetBuilder

from megatron_ipt.formats.indexed import IndexedDatasetWriter, merge_datasets, optimal_dtype_code, read_index_header


def random_documents(seed, n, vocab_size, max_len=40, empty_every=7):
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, vocab_size, rng.integers(1, max_len)).tolist() for _ in range(n)]
    for i in range(0, n, empty_every):
        docs[i] = []  # Megatron writes empty texts as empty documents
    return docs


def megatron_build(prefix, docs, vocab_size):
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=DType.optimal_dtype(vocab_size))
    for doc in docs:
        builder.add_document(np.array(doc, dtype=np.int64), [len(doc)] if doc else [])
    builder.finalize(prefix + ".idx")


def same_files(a, b):
    return filecmp.cmp(a + ".bin", b + ".bin", shallow=False) and filecmp.cmp(a + ".idx", b + ".idx", shallow=False)


@pytest.mark.parametrize("vocab_size", [32000, 128256])  # uint16 and int32 files
def test_byte_identical_to_megatron_builder(tmp_path, vocab_size):
    docs = random_documents(0, 3000, vocab_size)
    megatron_build(str(tmp_path / "ref"), docs, vocab_size)
    with IndexedDatasetWriter(str(tmp_path / "ours"), vocab_size=vocab_size) as writer:
        for start in range(0, len(docs), 977):  # uneven batches
            writer.add_documents(docs[start : start + 977])
    assert same_files(str(tmp_path / "ref"), str(tmp_path / "ours"))
    assert read_index_header(str(tmp_path / "ours"))["dtype_code"] == (8 if vocab_size < 65500 else 4)


def test_sentence_level_documents_match_megatron(tmp_path):
    rng = np.random.default_rng(1)
    docs = [[rng.integers(0, 1000, rng.integers(1, 9)).tolist() for _ in range(rng.integers(0, 4))] for _ in range(500)]
    builder = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=np.uint16)
    for sentences in docs:
        builder.add_document(np.array([t for s in sentences for t in s], dtype=np.int64), [len(s) for s in sentences])
    builder.finalize(str(tmp_path / "ref.idx"))
    lengths = np.array([len(s) for d in docs for s in d], dtype=np.int64)
    tokens = np.array([t for d in docs for s in d for t in s], dtype=np.int32)
    per_doc = np.array([len(d) for d in docs], dtype=np.int64)
    with IndexedDatasetWriter(str(tmp_path / "ours"), vocab_size=1000) as writer:
        writer.add_batch(tokens, lengths, per_doc)
    assert same_files(str(tmp_path / "ref"), str(tmp_path / "ours"))


def test_megatron_reader_reads_what_we_write(tmp_path):
    docs = random_documents(2, 400, 32000, empty_every=5)
    with IndexedDatasetWriter(str(tmp_path / "ours"), vocab_size=32000) as writer:
        writer.add_documents(docs)
    ds = IndexedDataset(str(tmp_path / "ours"))
    non_empty = [d for d in docs if d]
    assert len(ds) == len(non_empty)
    assert len(ds.document_indices) == len(docs) + 1
    for i, doc in enumerate(non_empty):
        assert ds[i].tolist() == doc
    assert ds[3].dtype == np.uint16


def test_native_merge_equals_single_build_and_megatron_add_index(tmp_path):
    docs = random_documents(3, 1500, 32000)
    parts = [docs[:10], docs[10:11], [], docs[11:900], docs[900:]]  # includes an empty part
    for i, part in enumerate(parts):
        with IndexedDatasetWriter(str(tmp_path / f"part{i}"), vocab_size=32000) as writer:
            writer.add_documents(part)
    merge_datasets([str(tmp_path / f"part{i}") for i in range(len(parts))], str(tmp_path / "merged"))
    megatron_build(str(tmp_path / "single"), docs, 32000)
    assert same_files(str(tmp_path / "single"), str(tmp_path / "merged"))

    builder = IndexedDatasetBuilder(str(tmp_path / "mega_merged.bin"), dtype=np.uint16)
    for i in range(len(parts)):
        builder.add_index(str(tmp_path / f"part{i}"))
    builder.finalize(str(tmp_path / "mega_merged.idx"))
    assert same_files(str(tmp_path / "mega_merged"), str(tmp_path / "merged"))


def test_merge_refuses_mixed_dtypes(tmp_path):
    with IndexedDatasetWriter(str(tmp_path / "a"), vocab_size=32000) as w:
        w.add_documents([[1, 2]])
    with IndexedDatasetWriter(str(tmp_path / "b"), vocab_size=100000) as w:
        w.add_documents([[3, 4]])
    with pytest.raises(ValueError, match="dtype code"):
        merge_datasets([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "m"))
    assert not any(name.startswith("m.") for name in os.listdir(tmp_path))


def test_optimal_dtype_follows_megatron():
    for vocab in (1, 32000, 65499, 65500, 128256):
        assert optimal_dtype_code(vocab) == DType.code_from_dtype(DType.optimal_dtype(vocab))


def test_token_out_of_range_is_rejected_and_leaves_nothing(tmp_path):
    prefix = str(tmp_path / "bad")
    with pytest.raises(ValueError, match="token id 70000 does not fit"):
        with IndexedDatasetWriter(prefix, vocab_size=32000) as writer:
            writer.add_documents([[1, 2, 3]])
            writer.add_documents([[5, 70000]])
    assert os.listdir(tmp_path) == []


def test_lengths_must_cover_tokens(tmp_path):
    writer = IndexedDatasetWriter(str(tmp_path / "x"), vocab_size=100)
    with pytest.raises(ValueError, match="lengths sum to 2 but the batch holds 3 tokens"):
        writer.add_batch(np.array([1, 2, 3], dtype=np.int32), np.array([2], dtype=np.int64))
    writer.abort()
    assert os.listdir(tmp_path) == []


def test_failed_rebuild_keeps_previous_finished_dataset(tmp_path):
    prefix = str(tmp_path / "ds")
    with IndexedDatasetWriter(prefix, vocab_size=100) as w:
        w.add_documents([[1, 2, 3]])
    with pytest.raises(RuntimeError):
        with IndexedDatasetWriter(prefix, vocab_size=100) as w:
            w.add_documents([[9, 9]])
            raise RuntimeError("killed mid-way")
    ds = IndexedDataset(prefix)  # keep a reference: its __del__ unmaps the memory ds[i] points into
    assert ds[0].tolist() == [1, 2, 3]
    assert sorted(os.listdir(tmp_path)) == ["ds.bin", "ds.idx"]


def test_index_memory_does_not_grow_with_documents(tmp_path):
    """2M documents: Megatron's builder keeps ~2 Python ints per document (>100 MB); ours spills to disk."""
    process = psutil.Process()
    lengths = np.ones(100_000, dtype=np.int64)
    tokens = np.arange(100_000, dtype=np.int32) % 30000
    with IndexedDatasetWriter(str(tmp_path / "many"), vocab_size=32000) as writer:
        writer.add_batch(tokens, lengths)
        before = process.memory_info().rss
        for _ in range(19):
            writer.add_batch(tokens, lengths)
        grown = process.memory_info().rss - before
    assert grown < 16 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB while adding 1.9M documents"
    header = read_index_header(str(tmp_path / "many"))
    assert header["sequence_count"] == header["document_count"] == 2_000_000
    ds = IndexedDataset(str(tmp_path / "many"))
    assert ds[1_999_999].tolist() == [99_999 % 30000]
