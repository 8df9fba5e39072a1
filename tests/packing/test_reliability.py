"""What survives kill -9, a full disk and an unwritable output in the data tools (docs/preprocess.md,
"Reliability"): a .bin/.idx pair is published so that a kill at any step leaves the old dataset or the new one,
never a mismatched pair; a killed preprocess's workers die with it and its leftovers go with the next run."""

import errno
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_ipt.formats.indexed import IndexedDatasetWriter, check_pair, read_index_header
from megatron_ipt.io import atomic
from tests.conftest import REPO, one_error_line, write_jsonl
from tests.io.test_atomic import kill_at_step

TOOL = os.path.join(REPO, "tools", "preprocess_data.py")
MERGE = os.path.join(REPO, "tools", "merge_datasets.py")


def snapshot(prefix):
    return tuple(open(prefix + ext, "rb").read() if os.path.exists(prefix + ext) else None for ext in (".bin", ".idx"))


@pytest.mark.parametrize("first_build", [False, True], ids=["replace", "first"])
def test_a_dataset_killed_at_every_publish_step_is_the_old_or_the_new(tmp_path, first_build):
    prefix = str(tmp_path / "ds")

    def write(docs):
        with IndexedDatasetWriter(prefix, vocab_size=1000) as writer:
            writer.add_documents(docs)

    old_docs, new_docs = [[1, 2, 3]] * 5, [[4, 5]] * 7 + [[6]]
    write(new_docs)
    new = snapshot(prefix)
    for ext in (".bin", ".idx"):
        os.remove(prefix + ext)
    if not first_build:
        write(old_docs)
    old = snapshot(prefix)
    step, finished = 1, False
    while not finished:
        finished = kill_at_step(step, lambda: write(new_docs))
        # Right after the kill, before any cleanup: an index is only ever beside its own .bin.
        if os.path.exists(prefix + ".idx"):
            assert snapshot(prefix) in (old, new), step
            check_pair(prefix)
        else:
            assert not IndexedDataset.exists(prefix)  # megatron-core sees no dataset, not a wrong one
        atomic.remove_stale(str(tmp_path))  # what the next run in this directory does first
        assert snapshot(prefix) in (old, new), step
        assert sorted(os.listdir(tmp_path)) == ([] if snapshot(prefix) == (None, None) else ["ds.bin", "ds.idx"])
        if not finished:
            for ext in (".bin", ".idx"):
                if os.path.exists(prefix + ext):
                    os.remove(prefix + ext)
            if not first_build:
                write(old_docs)
        step += 1
    assert step > 4 and snapshot(prefix) == new


def test_check_pair_names_a_mismatched_or_truncated_pair(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for prefix, docs in ((a, [[1, 2, 3]] * 5), (b, [[1]] * 2)):
        with IndexedDatasetWriter(prefix, vocab_size=1000) as writer:
            writer.add_documents(docs)
    check_pair(a)
    os.replace(b + ".bin", a + ".bin")
    with pytest.raises(ValueError, match=r"a\.bin is 4 bytes but .*a\.idx describes 30: .* not one dataset"):
        check_pair(a)
    with open(a + ".idx", "r+b") as f:
        f.truncate(40)
    with pytest.raises(ValueError, match=r"a\.idx: truncated index"):
        check_pair(a)


def _children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_mid_run_workers_die_and_the_next_run_cleans_up(tmp_path, real_texts, mistral_model):
    """The parent killed mid-run: its pool workers and multiprocessing's resource tracker exit within seconds
    (before: they ran on for minutes), the next run removes the dead run's parts and writes the dataset."""
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for _ in range(20) for t in real_texts])
    prefix = tmp_path / "out" / "x"
    args = [sys.executable, TOOL, "--input", path, "--output-prefix", prefix, "--tokenizer-type", "MistralTokenizer"]
    args += ["--tokenizer-model", mistral_model, "--workers", "2", "--shard-bytes", str(256 << 10)]
    args = list(map(str, args))
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # wait for the workers' first finished part
            parts = [n for n in os.listdir(prefix.parent)] if prefix.parent.exists() else []
            parts = [prefix.parent / n for n in parts if n.startswith("x.parts.")]
            if parts and any(n.endswith(".idx") for n in os.listdir(parts[0])):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "finished before it could be killed"
        kids = _children(proc.pid)
        assert len(kids) >= 3  # two workers and the resource tracker
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while any(map(_running, kids)) and time.time() < deadline:
            time.sleep(0.1)
        assert not [k for k in kids if _running(k)], "workers outlived their killed parent"
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if any(map(_running, _children(proc.pid))) else None
    (leftover,) = [n for n in os.listdir(prefix.parent) if n.startswith("x.parts.")]
    assert leftover == f"x.parts.{proc.pid}@{os.uname().nodename}.tmp"
    rerun = subprocess.run(args, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(os.listdir(prefix.parent)) == ["x_text_document.bin", "x_text_document.idx"]
    check_pair(f"{prefix}_text_document")
    assert read_index_header(f"{prefix}_text_document")["document_count"] == 20 * len(real_texts)


def _file_size_limit(limit):
    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


@pytest.mark.parametrize("workers", [1, 2])
def test_a_write_that_fails_is_one_line_naming_the_output_and_keeps_the_old_dataset(
    tmp_path, real_texts, mistral_model, workers
):
    """A real failed write (the kernel's file size limit, EFBIG: the same path as ENOSPC through the native
    writer): one line naming the file, the previous dataset untouched, no temporary file left."""
    small = write_jsonl(tmp_path / "small.jsonl", [{"text": t} for t in real_texts[:5]])
    big = write_jsonl(tmp_path / "big.jsonl", [{"text": t} for _ in range(3) for t in real_texts])
    prefix = tmp_path / "out" / "x"
    flags = ["--output-prefix", prefix, "--tokenizer-type", "MistralTokenizer", "--tokenizer-model", mistral_model]
    flags = list(map(str, flags + ["--workers", workers]))
    env = dict(os.environ, PYTHONPATH=REPO)
    ok = subprocess.run([sys.executable, TOOL, "--input", small, *flags], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    before = snapshot(f"{prefix}_text_document")
    limit = 64 << 10  # the big input's tokens need more; reading and the small files stay below
    failed = subprocess.run(
        [sys.executable, TOOL, "--input", big, *flags],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=_file_size_limit(limit),
    )
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == (
        f"error: {prefix}_text_document.bin: file too large (file size limit reached)"
    ), failed.stderr
    assert "Traceback" not in failed.stderr
    assert snapshot(f"{prefix}_text_document") == before
    assert sorted(os.listdir(prefix.parent)) == ["x_text_document.bin", "x_text_document.idx"]


def test_native_out_of_space_becomes_an_oserror_naming_the_output(tmp_path, monkeypatch):
    from megatron_ipt.formats import indexed

    with pytest.raises(OSError) as info, indexed._os_errors():
        raise RuntimeError(f"cannot write {atomic.owned_path(str(tmp_path / 'x.bin'))}: No space left on device")
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(tmp_path / "x.bin"))
    with pytest.raises(RuntimeError, match="unexpected end of file"), indexed._os_errors():
        raise RuntimeError("unexpected end of file in x.idx")


def test_unwritable_output_fails_before_the_work(tmp_path, real_texts, mistral_model):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in real_texts[:5]])
    (tmp_path / "a-file").write_text("x")
    prefix = tmp_path / "a-file" / "x"
    flags = ["--tokenizer-type", "MistralTokenizer", "--tokenizer-model", mistral_model]
    result = subprocess.run(
        [sys.executable, TOOL, "--input", path, "--output-prefix", prefix, *flags],
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and result.stderr.splitlines()[-1] == f"error: {prefix.parent}: not a directory"


def test_merge_refuses_a_mismatched_input_and_an_unwritable_output(tmp_path, capsys):
    from tools import merge_datasets

    shards = tmp_path / "shards"
    for name, docs in (("a", [[1, 2, 3]] * 5), ("b", [[1]] * 2)):
        with IndexedDatasetWriter(str(shards / name), vocab_size=1000) as writer:
            writer.add_documents(docs)
    (tmp_path / "a-file").write_text("x")
    assert merge_datasets.main(["--input", str(shards), "--output-prefix", str(tmp_path / "a-file" / "m")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'a-file'}: not a directory\n"
    with open(shards / "b.bin", "ab") as f:
        f.write(b"\0\0")  # a .bin that is not the one its index describes
    assert merge_datasets.main(["--input", str(shards), "--output-prefix", str(tmp_path / "m")]) == 1
    assert "b.bin is 6 bytes but" in capsys.readouterr().err
    assert not (tmp_path / "m.bin").exists()


# -- hostile inputs (issue 25): one `error:` line naming the file, no traceback ------------------------------------


def _preprocess(*args):
    argv = [sys.executable, TOOL, *map(str, args)]
    return subprocess.run(argv, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True)


@pytest.mark.parametrize(
    "variant", ["flipped", "truncated", "header-zeroed", "empty", "json", "directory"], ids=lambda v: v
)
def test_a_broken_tokenizer_model_is_one_line_naming_it(tmp_path, real_texts, broken_tokenizer_models, variant):
    """A corrupt SentencePiece model (or a directory) was a sentencepiece RuntimeError traceback."""
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in real_texts[:5]])
    model = broken_tokenizer_models[variant]
    result = _preprocess(
        "--input", path, "--output-prefix", tmp_path / "out" / "x", "--tokenizer-type", "MistralTokenizer",
        "--tokenizer-model", model,
    )  # fmt: skip
    expect = "is a directory" if variant == "directory" else "not a SentencePiece model"
    one_error_line(result, f"--tokenizer-model {model}: {expect}")
    if variant == "directory":
        assert "--tokenizer-type HuggingFaceTokenizer" in result.stderr
    assert not (tmp_path / "out" / "x_text_document.bin").exists()


@pytest.mark.parametrize("content", ["", "\n\n\n", " \n\t\n"], ids=["empty", "blank-lines", "whitespace-lines"])
@pytest.mark.parametrize("workers", [1, 2])
def test_an_input_with_no_documents_is_one_line_naming_it(tmp_path, mistral_model, content, workers):
    """An empty input said `error: max_workers must be greater than 0` (--workers > 1) or wrote an empty dataset
    with exit 0; blank lines only, an empty dataset with exit 0."""
    path = tmp_path / "in.jsonl"
    path.write_text(content)
    prefix = tmp_path / "out" / "x"
    result = _preprocess(
        "--input", path, "--output-prefix", prefix, "--tokenizer-type", "MistralTokenizer", "--tokenizer-model",
        mistral_model, "--workers", workers,
    )  # fmt: skip
    line = one_error_line(result, f"{path}: holds no documents")
    assert ("it is empty" in line) == (content == "")
    assert not os.path.exists(prefix.parent) or os.listdir(prefix.parent) == []
