"""Checkpoint reliability and safety (issue 13): a checkpoint never runs code when loaded, checksums catch
corruption, a re-save never leaves the tracker naming a missing directory, and bad checkpoint input is one line
naming the file. (One writer per --save: test_checkpoint.py's kill test; disk full: below.)"""

import io
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from megatron_ipt import assets
from megatron_ipt.training import checkpoint
from megatron_ipt.training import checkpoint_files as files
from megatron_ipt.training.errors import TrainingInputError
from tests.conftest import write_jsonl
from tests.training.helpers import REPO, command, environment, run


class _RunsCode:
    """A pickle that creates a marker file when unpickled: what a hostile checkpoint would hold."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="session")
def saved(corpus, tmp_path_factory):
    """A real checkpoint: 2 steps at DP=2 with the distributed optimizer, saved at iteration 2."""
    ck = str(tmp_path_factory.mktemp("reliability") / "ck")
    run(corpus, 2, "--train-iters", "2", "--save", ck, "--use-distributed-optimizer")
    return ck


def copy_of(saved, tmp_path, name="ck"):
    copy = str(tmp_path / name)
    shutil.copytree(saved, copy)
    return copy, checkpoint.iteration_dir(copy, 2)


def rewrite_checksums(directory):
    """What a hostile uploader would do: a checksum list matching the tampered files."""
    os.remove(os.path.join(directory, files.CHECKSUMS))
    files.write_checksums(directory)


def _subprocess(args, extra_env=None, **kwargs):
    return subprocess.run(
        args, cwd=REPO, env=environment(**(extra_env or {})), capture_output=True, text=True, timeout=300, **kwargs
    )


def one_error_line(proc):
    """The tool's whole complaint: exit 1 and one `error: ...` line, no Python traceback of ours."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stdout[-2000:] + proc.stderr[-4000:]
    frames = [line for line in proc.stderr.splitlines() if line.startswith('  File "')]
    assert not any("megatron_ipt" in line or "tools/" in line for line in frames), proc.stderr[-4000:]
    return errors[0]


def pretrain(corpus, *flags, nproc=1, **kwargs):
    return _subprocess(command(corpus, nproc, "--use-distributed-optimizer", *flags), **kwargs)


def convert_to_hf(load, tmp_path):
    out = str(tmp_path / "hf")
    return _subprocess(
        [sys.executable, "tools/convert_checkpoint.py", "megatron-to-hf", "--load", load, "--hf-dir", out]
    )


def evaluate(load, tmp_path):
    tasks = str(tmp_path / "tasks.jsonl")
    write_jsonl(tasks, [{"input": "The sky is\nAnswer:", "options": ["blue", "green"], "gold_index": 0}])
    return _subprocess(
        [sys.executable, "tools/evaluate.py", "--load", load, "--model", "tiny"]
        + ["--tokenizer-model", assets.mistral_tokenizer_model(), "--tasks", tasks]
    )


# ---- no code runs from a checkpoint ------------------------------------------------------------------------------


@pytest.mark.slow  # three tool starts, ~35 s on 2 cores
def test_a_code_running_metadata_is_refused_by_pretrain_convert_and_evaluate(corpus, saved, tmp_path):
    """`.metadata` replaced by a pickle that runs a shell command, with a checksum list to match: pretrain --load,
    convert megatron-to-hf and evaluate --load each stop with one line naming the file; the command never ran
    (before: each of them ran it)."""
    ck, directory = copy_of(saved, tmp_path)
    marker = tmp_path / "pwned"
    with open(os.path.join(directory, ".metadata"), "wb") as f:
        pickle.dump(_RunsCode(marker), f)
    rewrite_checksums(directory)
    expected = (
        f"error: {os.path.join(directory, '.metadata')}: refused, not a valid checkpoint file (names posix.system"
    )
    for proc in (
        pretrain(corpus, "--train-iters", "3", "--load", ck),
        convert_to_hf(ck, tmp_path),
        evaluate(ck, tmp_path),
    ):
        assert one_error_line(proc).startswith(expected)
        assert not marker.exists()


def _evil_torch_save(marker) -> bytes:
    buffer = io.BytesIO()
    torch.save(_RunsCode(marker), buffer)
    return buffer.getvalue()


def test_a_code_running_bytes_item_or_common_pt_is_refused(saved, tmp_path):
    """The other pickles megatron reads unrestricted: a ShardedObject's bytes item (our RNG state: torch's DCP
    planner reads it with torch.load(weights_only=False)) and common.pt; each with a checksum list to match."""
    marker = tmp_path / "pwned"
    _, directory = copy_of(saved, tmp_path, "item")
    metadata = files.read_metadata(directory)
    index = next(i for i in metadata.storage_data if i.fqn.startswith("rng_state/"))
    evil = _evil_torch_save(marker)
    with open(os.path.join(directory, "__9_0.distcp"), "wb") as f:
        f.write(evil)
    metadata.storage_data[index] = type(metadata.storage_data[index])("__9_0.distcp", 0, len(evil))
    with open(os.path.join(directory, ".metadata"), "wb") as f:
        pickle.dump(metadata, f)  # still only DCP classes: the metadata itself passes
    rewrite_checksums(directory)
    with pytest.raises(TrainingInputError, match=rf"__9_0\.distcp \(item {index.fqn}\): refused.*posix\.system"):
        checkpoint.tensors_metadata(directory)

    _, directory = copy_of(saved, tmp_path, "common")
    with open(os.path.join(directory, "common.pt"), "wb") as f:
        f.write(evil)
    rewrite_checksums(directory)
    with pytest.raises(TrainingInputError, match=r"common\.pt: refused, not a valid checkpoint file"):
        files.verify(directory)
    assert not marker.exists()


# ---- checksums, and corrupt or missing files ----------------------------------------------------------------------


@pytest.mark.slow  # four short runs, ~45 s on 2 cores
def test_corrupt_or_missing_files_are_named(corpus, saved, tmp_path):
    """A shard overwritten with random bytes: pretrain --load stops with a checksum mismatch naming it (before:
    it loaded, and the loss went NaN a step later). Without a checksum list (saved before they were recorded) an
    intact checkpoint loads and the log says it was not verified once, a missing shard is named, and a truncated
    `.metadata` is named."""
    ck, directory = copy_of(saved, tmp_path)
    listed = {line.split("  ")[1] for line in open(os.path.join(directory, files.CHECKSUMS)).read().splitlines()}
    assert listed == set(os.listdir(directory)) - {files.CHECKSUMS}
    shard = os.path.join(directory, "__0_0.distcp")
    with open(shard, "r+b") as f:
        f.seek(os.path.getsize(shard) // 2)
        f.write(os.urandom(4096))
    line = one_error_line(pretrain(corpus, "--train-iters", "3", "--load", ck))
    assert line.startswith(f"error: {shard}: checksum mismatch") and "corrupt or was changed after the save" in line

    ck, directory = copy_of(saved, tmp_path, "old")
    os.remove(os.path.join(directory, files.CHECKSUMS))
    proc = pretrain(corpus, "--train-iters", "3", "--load", ck, "--override-opt_param-scheduler")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count(f"{directory} has no {files.CHECKSUMS} (saved before checksums were recorded): not verified") == 1
    assert "at iteration 2" in out

    # The last shard file (0.16.1 writes __0_1 too; 0.19 writes one file per rank here: __0_0, __1_0).
    missing = os.path.join(directory, sorted(f for f in os.listdir(directory) if f.endswith(".distcp"))[-1])
    os.remove(missing)
    line = one_error_line(pretrain(corpus, "--train-iters", "3", "--load", ck))
    assert line.startswith(f"error: {missing}: cannot read") and "No such file" in line

    ck, directory = copy_of(saved, tmp_path, "truncated")
    os.remove(os.path.join(directory, files.CHECKSUMS))
    metadata = os.path.join(directory, ".metadata")
    os.truncate(metadata, os.path.getsize(metadata) // 2)
    line = one_error_line(convert_to_hf(ck, tmp_path))
    assert line.startswith(f"error: {metadata}: refused, not a valid checkpoint file")


def test_checksums_catch_a_missing_or_changed_file_without_a_process_group(saved, tmp_path):
    _, directory = copy_of(saved, tmp_path)
    files.verify(directory)
    os.remove(os.path.join(directory, "__1_0.distcp"))
    with pytest.raises(TrainingInputError, match=r"__1_0\.distcp: missing \(listed in .*checksums\.sha256\)"):
        files.verify(directory)
    # The line after the listed files (how many differs: 0.16.1 writes common.pt and more shard files than 0.19).
    garbage_line = len(open(os.path.join(directory, files.CHECKSUMS)).read().splitlines()) + 1
    with open(os.path.join(directory, files.CHECKSUMS), "a") as f:
        f.write("garbage\n")
    with pytest.raises(TrainingInputError, match=rf"checksums\.sha256: line {garbage_line} is not '<sha256>  <file>'"):
        files.verify(directory)


@pytest.mark.parametrize("text", ["", "latest", "3\n4", "\xff"])
def test_a_bad_tracker_is_named(tmp_path, text):
    (tmp_path / checkpoint.MARKER).write_bytes(text.encode("latin-1"))
    with pytest.raises(TrainingInputError, match=f"{checkpoint.MARKER}: "):
        checkpoint.latest_checkpoint(str(tmp_path))


def test_a_tracker_naming_a_missing_iteration_is_named(tmp_path):
    (tmp_path / checkpoint.MARKER).write_text("5")
    with pytest.raises(TrainingInputError, match=r"names iteration 5, but .*iter_0000005 does not exist"):
        checkpoint.latest_checkpoint(str(tmp_path))


# ---- the --load rule ----------------------------------------------------------------------------------------------


def test_the_load_rule(tmp_path):
    """--load must be a directory; a path that does not exist is allowed only when it is also --save (a job's
    first run). Megatron-LM's rule for a directory without a tracker: start fresh (said so)."""
    missing, a_file, empty = str(tmp_path / "nothing"), tmp_path / "file", str(tmp_path)
    a_file.write_text("x")
    with pytest.raises(TrainingInputError, match=f"--load {missing}: no such directory"):
        checkpoint.check_load_dir(missing, None)
    with pytest.raises(TrainingInputError, match="is a file, not a checkpoint directory"):
        checkpoint.check_load_dir(str(a_file), str(a_file))
    fresh = f"no checkpoint in {missing} yet: starting from iteration 0"
    assert checkpoint.check_load_dir(missing, missing) == fresh
    assert (
        checkpoint.check_load_dir(missing + "/", missing)
        == f"no checkpoint in {missing}/ yet: starting from iteration 0"
    )
    assert checkpoint.check_load_dir(empty, None) == f"no checkpoint in {empty} yet: starting from iteration 0"


def test_pretrain_refuses_a_missing_load_directory(corpus, tmp_path):
    line = one_error_line(pretrain(corpus, "--train-iters", "1", "--load", str(tmp_path / "typo")))
    assert line == f"error: --load {tmp_path / 'typo'}: no such directory (to start from scratch, leave --load " + (
        "out, or give it the --save path)"
    )


# ---- publish before delete ----------------------------------------------------------------------------------------


def _fake_save(root, iteration, content):
    tmp = checkpoint.iteration_dir(root, iteration) + ".tmp"
    os.makedirs(tmp)
    with open(os.path.join(tmp, "data"), "w") as f:
        f.write(content)
    return tmp


class _Killed(Exception):
    pass


@pytest.mark.parametrize("kill_at", range(5))
def test_a_resave_killed_at_any_step_leaves_a_loadable_latest(tmp_path, monkeypatch, kill_at):
    """Re-saving iteration 5 over a committed iteration 5 (a rerun of a finished job), killed before each of its
    file operations in turn: the tracker's iteration is always readable (old or new content), and the next start's
    recovery leaves exactly one iter_0000005 and no leftovers (before: killed after the delete, the latest
    checkpoint was gone)."""
    root = str(tmp_path)
    marker = lambda: checkpoint.write_atomic(os.path.join(root, checkpoint.MARKER), "5")  # noqa: E731
    files.publish(_fake_save(root, 5, "old"), checkpoint.iteration_dir(root, 5), marker)
    tmp = _fake_save(root, 5, "new")
    calls = [0]
    real = {"replace": os.replace, "rmtree": shutil.rmtree}

    def step(name):
        def op(*args, **kwargs):
            calls[0] += 1
            if calls[0] > kill_at:
                raise _Killed()
            return real[name](*args, **kwargs)

        return op

    monkeypatch.setattr(files.os, "replace", step("replace"))  # os.replace: the renames and the tracker's commit
    monkeypatch.setattr(files.shutil, "rmtree", step("rmtree"))
    try:
        files.publish(tmp, checkpoint.iteration_dir(root, 5), marker)
    except _Killed:
        pass
    monkeypatch.undo()
    iteration, directory = checkpoint.latest_checkpoint(root)
    assert iteration == 5 and open(os.path.join(directory, "data")).read() in ("old", "new")
    files.recover(root)
    assert sorted(os.listdir(root)) == sorted([checkpoint.MARKER, "iter_0000005"]), os.listdir(root)
    content = open(os.path.join(checkpoint.iteration_dir(root, 5), "data")).read()
    assert content == ("new" if kill_at >= 2 else "old")


# ---- disk full ----------------------------------------------------------------------------------------------------


def _small_files():
    """In the job: writes past 1 MB fail (EFBIG, as ENOSPC would) instead of raising SIGXFSZ."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))


def test_a_failed_checkpoint_write_is_one_line_and_leaves_nothing(corpus, tmp_path):
    """The checkpoint's 33 MB shard cannot be written: one line naming the directory and the reason, no
    iter_*.tmp left, no tracker (before: a traceback from every rank)."""
    ck = str(tmp_path / "ck")
    proc = pretrain(corpus, "--train-iters", "1", "--save", ck, preexec_fn=_small_files)
    tmp = checkpoint.iteration_dir(ck, 1) + ".tmp"
    line = one_error_line(proc)  # the cause as torch's writer reports it: a short write, and the space left
    assert line.startswith(f"error: cannot write checkpoint iteration 1 to {tmp}: ") and "GiB free there" in line
    assert sorted(os.listdir(ck)) == [checkpoint.MODEL_FILE]


# ---- a checkpoint of another model ------------------------------------------------------------------------------


def test_loading_another_models_checkpoint_names_the_flags_that_differ(corpus, saved, tmp_path):
    """--load of a 64-wide, 2-layer checkpoint with --hidden-size 128 or --num-layers 3: one line naming the flags
    and both values, checked before megatron-core's load (before: its CheckpointingException traceback); evaluate's
    --model mismatch names the first tensor that does not fit."""
    flags = ["--train-iters", "3", "--load", saved, "--no-load-optim"]
    line = one_error_line(pretrain(corpus, *flags, "--hidden-size", "128"))
    assert f"--load {saved}: the checkpoint holds another model (--hidden-size 64 there, 128 here)" in line
    line = one_error_line(pretrain(corpus, *flags, "--num-layers", "3"))
    assert "(--num-layers 2 there, 3 here)" in line
    tasks = str(tmp_path / "tasks.jsonl")
    write_jsonl(tasks, [{"input": "The sky is\nAnswer:", "options": ["blue", "green"], "gold_index": 0}])
    proc = _subprocess(
        [sys.executable, "tools/evaluate.py", "--load", saved, "--model", "tiny", "--hidden-size", "128"]
        + ["--tokenizer-model", assets.mistral_tokenizer_model(), "--tasks", tasks]
    )
    assert "the checkpoint holds another model (" in one_error_line(proc) and " is [" in proc.stderr
