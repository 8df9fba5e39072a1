"""The training run under hostile conditions (issue 13): ranks die with a killed launcher; a corrupt dataset, token ids
past the vocabulary, a non-numeric index cache file or an unwritable output is one `error: ...` line naming the file,
before the model is built, never a rank traceback."""

import errno
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from megatron_ipt.training import datasets, preflight
from megatron_ipt.training.errors import TrainingInputError
from tests.training.helpers import background, run, wait_for


def _copy(prefix, directory):
    os.makedirs(directory, exist_ok=True)
    copy = os.path.join(directory, os.path.basename(prefix))
    for ext in (".bin", ".idx"):
        shutil.copy(prefix + ext, copy + ext)
    return copy


def _write(prefix, documents, dtype=np.uint16):
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    for ids in documents:
        builder.add_document(np.array(ids, dtype=dtype), [len(ids)])
    builder.finalize(prefix + ".idx")
    return prefix


def _one_line_error(out: str, *parts: str) -> None:
    """Exactly one `error:` line, naming `parts`; no rank traceback (torchrun's own ChildFailedError is the only
    traceback left, and its summary repeats our line)."""
    lines = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, out[-4000:]
    for part in parts:
        assert part in lines[0], lines[0]
    assert out.count("Traceback (most recent call last)") <= 1 and "site-packages/megatron" not in out, out[-4000:]
    assert "traceback : error: " in out, out[-4000:]  # torchrun's summary shows the rank's recorded line


# -- 1. ranks die with their launcher ---------------------------------------------------------------------------------


def test_ranks_die_with_a_killed_launcher(corpus, tmp_path):
    """kill -9 of torchrun's process group: the ranks (each in a session of its own) and the checkpoint writer's
    Manager process they started are all gone within seconds, instead of training on and saving into --save."""
    ck, log = str(tmp_path / "ck"), tmp_path / "run.log"
    flags = ["--train-iters", "1000", "--save", ck, "--save-interval", "2"]
    with background(log, corpus, 2, *flags) as job:
        wait_for(job, log, "iteration        3/    1000")  # after the first save: the writer is up
        tree = psutil.Process(job.pid).children(recursive=True)
        try:
            ranks = [p for p in tree if "tools/pretrain.py" in " ".join(p.cmdline()) and p.ppid() == job.pid]
            assert len(ranks) == 2 and all(os.getsid(p.pid) != os.getsid(job.pid) for p in ranks)
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
            gone, alive = psutil.wait_procs(tree, timeout=10)
            assert not alive, [" ".join(p.cmdline())[:100] for p in alive]
        finally:
            for process in tree:
                try:
                    process.kill()
                except psutil.NoSuchProcess:
                    pass


# -- 2./3. corrupt datasets: one line naming the file, before the model is built ------------------------------------


def test_truncated_index_is_one_line_from_pretrain(corpus, tmp_path):
    prefix = _copy(corpus, tmp_path / "d")
    os.truncate(prefix + ".idx", 100)
    out = run(prefix, 2, "--train-iters", "2", expect_rc=1)
    _one_line_error(out, prefix + ".idx", "truncated")
    assert "number of parameters" not in out  # stopped before the model was built


def _cases(corpus, root):
    """(prefix, what the error must say) for each way a dataset can be broken."""
    cases = []

    def case(name, damage, *expect):
        prefix = _copy(corpus, root / name)
        damage(prefix)
        cases.append((name, prefix, expect))

    case("truncated-idx", lambda p: os.truncate(p + ".idx", 300), ".idx", "truncated")
    case("no-bin", lambda p: os.remove(p + ".bin"), ".bin does not exist")
    case("no-idx", lambda p: os.remove(p + ".idx"), ".idx does not exist")
    case("short-bin", lambda p: os.truncate(p + ".bin", 1000), ".bin", "truncated: 1000 bytes")
    case("long-bin", lambda p: _append(p + ".bin", b"\0\0"), ".bin", ".idx", "not one dataset")
    case("bad-header", lambda p: _patch(p + ".idx", 0, b"NOTANIDX"), ".idx", "bad header")
    case("dtype-code", lambda p: _patch(p + ".idx", 17, bytes([42])), ".idx", "unknown token dtype code 42")
    case("lengths", lambda p: _patch(p + ".idx", 34, struct.pack("<i", 7)), ".idx", "lengths and pointers disagree")
    empty = str(root / "empty" / "empty_text_document")
    os.makedirs(os.path.dirname(empty))
    cases.append(("no-documents", _write(empty, []), ("empty dataset",)))
    blank = str(root / "blank" / "blank_text_document")
    os.makedirs(os.path.dirname(blank))
    cases.append(("empty-documents", _write(blank, [[], []]), ("empty dataset", "hold no tokens")))
    cases.append(("no-such-prefix", str(root / "nowhere" / "x_text_document"), ("no dataset there",)))
    return cases


def _append(path, content):
    with open(path, "ab") as f:
        f.write(content)


def _patch(path, offset, content):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(content)


def test_every_corrupt_dataset_is_a_training_input_error(corpus, tmp_path):
    for name, prefix, expect in _cases(corpus, tmp_path):
        with pytest.raises(TrainingInputError) as caught:
            datasets.check_dataset(prefix)
        message = str(caught.value)
        assert all(part in message for part in expect), (name, message)
        assert prefix in message or os.path.basename(prefix) in message, (name, message)
    assert datasets.check_dataset(corpus)["documents"] == 120  # the sound one passes


def test_a_bin_longer_than_its_index_says_is_one_line_from_pretrain(corpus, tmp_path):
    """Issue 25: the `.idx` of one dataset beside a larger `.bin` (here the corpus' tokens twice over) trained to the
    end with exit 0 (megatron-core reads only what the index says); only a too-short `.bin` was caught."""
    prefix = _copy(corpus, tmp_path / "d")
    with open(corpus + ".bin", "rb") as f:
        _append(prefix + ".bin", f.read())
    size, want = os.path.getsize(prefix + ".bin"), os.path.getsize(corpus + ".bin")
    out = run(prefix, 2, "--train-iters", "2", expect_rc=1)
    _one_line_error(out, prefix + ".bin", prefix + ".idx", f"{size} bytes", f"({want} bytes)")
    assert "number of parameters" not in out


@pytest.mark.parametrize("variant", ["flipped", "directory"])
def test_a_broken_tokenizer_model_is_one_line_from_pretrain(corpus, broken_tokenizer_models, variant):
    """Issue 25: a corrupt SentencePiece model (or a directory) was a sentencepiece RuntimeError on every rank."""
    model = broken_tokenizer_models[variant]
    # the type given: without it, a file that does not load leaves the type unknown and it is asked for
    out = run(corpus, 1, "--train-iters", "2", "--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", model,
              expect_rc=1)  # fmt: skip
    expect = "is a directory" if variant == "directory" else "not a SentencePiece model"
    _one_line_error(out, f"--tokenizer-model {model}: {expect}")


# -- 4. token ids against the vocabulary ----------------------------------------------------------------------------


def test_token_ids_past_the_vocabulary_stop_the_run_at_tp2(tmp_path):
    """Ids >= the vocabulary (here 40000 with the Mistral tokenizer's 32000) trained at TP=2 with exit 0 and a frozen
    loss; now one line naming the prefix, the max id, the vocabulary and the tokenizer."""
    prefix = _write(str(tmp_path / "wide_text_document"), [[5, 40000, 7] * 50 for _ in range(20)])
    out = run(prefix, 2, "--tensor-model-parallel-size", "2", "--train-iters", "2", expect_rc=1)
    _one_line_error(out, prefix, "max id 40000", "vocabulary of 32000", "tokenizer.model")


def test_token_id_scan_is_cached_by_file_stamp(corpus, tmp_path, monkeypatch):
    prefix = _copy(corpus, tmp_path / "d")
    cache = str(tmp_path / "cache")
    info = datasets.check_dataset(prefix)
    low, high = datasets.token_id_range(prefix, cache, info["dtype"], info["tokens"])
    ids = np.fromfile(prefix + ".bin", np.uint16)
    assert (low, high) == (ids.min(), ids.max())
    with open(os.path.join(cache, datasets.TOKEN_IDS_FILE)) as f:
        assert f.read().lstrip().startswith("{")  # plain JSON, nothing to unpickle

    def no_rescan(*args):
        raise AssertionError("rescanned")

    monkeypatch.setattr(datasets, "scan_token_ids", no_rescan)
    assert datasets.token_id_range(prefix, cache, info["dtype"], info["tokens"]) == (low, high)
    os.utime(prefix + ".bin", ns=(1, 1))  # the .bin changed under the same prefix: scanned again
    with pytest.raises(AssertionError, match="rescanned"):
        datasets.token_id_range(prefix, cache, info["dtype"], info["tokens"])


# -- 5. the index cache holds plain integer arrays only ---------------------------------------------------------------


_EVIL = """
import numpy as np, os, sys
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
a = np.empty(2, dtype=object)
a[0] = Evil()
np.save(sys.argv[1], a, allow_pickle=True)
"""


def test_a_pickled_index_cache_file_is_refused_before_megatron_loads_it(corpus, tmp_path):
    """A first run writes megatron-core's index cache next to the data (plain integer arrays); one of its files is
    replaced by an object array whose unpickling would create a marker file. The next run refuses it in one line
    naming it, and nothing was unpickled."""
    prefix = _copy(corpus, tmp_path / "d")
    run(prefix, 1, "--train-iters", "1")
    cache = tmp_path / "d" / "index-cache"
    datasets.check_index_cache(str(cache))  # what megatron-core wrote passes
    target = sorted(cache.glob("*-GPTDataset-train-shuffle_index.npy"))[0]
    marker = tmp_path / "MARKER"
    subprocess.run([sys.executable, "-c", _EVIL, str(target), str(marker)], check=True)
    assert target.exists() and not marker.exists()
    out = run(prefix, 1, "--train-iters", "1", expect_rc=1)
    lines = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and str(target) in lines[0] and "refusing" in lines[0], out[-3000:]
    assert "Traceback" not in out.split("error: ")[0] and not marker.exists()


def test_a_non_npy_cache_file_is_refused(tmp_path):
    (tmp_path / "x-GPTDataset-train-document_index.npy").write_bytes(b"\x80\x04garbage")
    with pytest.raises(TrainingInputError, match="not a plain .npy index file"):
        datasets.check_index_cache(str(tmp_path))


# -- 6. outputs other than --save: writable before the model is built -----------------------------------------------


def test_unwritable_tensorboard_dir_is_one_line_before_the_model(corpus, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = run(corpus, 2, "--train-iters", "2", "--tensorboard-dir", str(blocker / "tb"), expect_rc=1)
    _one_line_error(out, "--tensorboard-dir", str(blocker / "tb"), "cannot write there")
    assert "number of parameters" not in out


def test_a_full_disk_is_named(tmp_path, monkeypatch):
    def full(fd, content):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(TrainingInputError, match=r"--data-cache-path .*cache: cannot write there \(disk full\)"):
        preflight.check_writable("--data-cache-path", str(tmp_path / "cache"))
    assert os.listdir(tmp_path / "cache") == []  # the scratch file is gone


def test_errors_are_printed_by_rank_0_and_recorded_for_torchrun(tmp_path, monkeypatch, capsys):
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    monkeypatch.setenv("RANK", "3")
    assert preflight.report(TrainingInputError("x.idx: truncated")) == 1
    assert capsys.readouterr().err == ""  # not rank 0: quiet
    assert "error: x.idx: truncated" in error_file.read_text()
    monkeypatch.setenv("RANK", "0")
    preflight.report(SystemExit("--split 1,0,0: bad"))
    assert capsys.readouterr().err == "error: --split 1,0,0: bad\n"


def test_the_split_guard_speaks_once(corpus):
    """A flag error found by every rank (here samples asked of an empty validation part) is one line, not one per
    rank."""
    out = run(corpus, 2, "--train-iters", "2", "--split", "999,1,0", "--eval-interval", "1", expect_rc=1)
    printed = [line for line in out.splitlines() if "asked of the empty valid part" in line and line[0] != " "]
    assert len(printed) == 1, out[-3000:]  # torchrun's summary repeats it, indented, under each rank
    _one_line_error(out, "--split 999,1,0")


def test_ranks_die_with_a_launcher_killed_while_they_start_up(corpus, tmp_path):
    """kill -9 of torchrun's process group while its ranks are still importing torch and megatron-core (before:
    they armed their death signal after those imports, against whoever had adopted them, and lived on idle)."""
    with background(tmp_path / "run.log", corpus, 2, "--train-iters", "1000") as job:
        deadline = time.monotonic() + 60
        while True:  # the two ranks, as soon as torchrun has started them
            ranks = [p for p in psutil.Process(job.pid).children() if "tools/pretrain.py" in " ".join(p.cmdline())]
            if len(ranks) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(ranks) == 2
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        try:
            _, alive = psutil.wait_procs(ranks, timeout=30)
            assert not alive, "ranks outlived their launcher"
        finally:
            for rank in ranks:
                try:
                    rank.kill()
                except psutil.NoSuchProcess:
                    pass
