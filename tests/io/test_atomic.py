"""io.atomic: owned temporary names, publishing that survives a kill at every step, and the cleanup of what dead
processes left (never a live one's)."""

import errno
import os
import socket
import subprocess
import sys

import pytest

from megatron_ipt.io import atomic
from megatron_ipt.io.cli import report_error


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_remove_stale_removes_only_what_dead_processes_on_this_host_left(tmp_path):
    host, dead = socket.gethostname(), dead_pid()
    keep = [
        f"a.jsonl.{os.getpid()}@{host}.tmp",  # ours: alive
        f"b.jsonl.{dead}@other-host.tmp",  # another host: cannot tell
        "c.jsonl.tmp",  # not an owned name
        "d.jsonl",
    ]
    gone = [f"e.jsonl.{dead}@{host}.tmp", f"f.bin.{dead}@{host}.tmp.lengths.part", f"g.{dead}@{host}.old"]
    for name in keep + gone:
        (tmp_path / name).write_text("x")
    (tmp_path / f"corpus.{dead}@{host}.tmp").mkdir()
    (tmp_path / f"corpus.{dead}@{host}.tmp" / "corpus-00000.jsonl").write_text("x")
    removed = atomic.remove_stale(str(tmp_path))
    assert sorted(removed) == sorted(gone + [f"corpus.{dead}@{host}.tmp"])
    assert sorted(os.listdir(tmp_path)) == sorted(keep)


def kill_at_step(step: int, work) -> bool:
    """Run `work` in a forked child that dies (os._exit, no cleanup, like kill -9) at its `step`-th file-system
    change (rename, replace, remove, rmtree); returns True if it finished before that step."""
    pid = os.fork()
    if pid == 0:  # child
        count = [0]

        def dying(real):
            def call(*args, **kwargs):
                count[0] += 1
                if count[0] == step:
                    os._exit(9)
                return real(*args, **kwargs)

            return call

        for name in ("rename", "replace", "remove", "unlink"):
            setattr(os, name, dying(getattr(os, name)))
        atomic.shutil.rmtree = dying(atomic.shutil.rmtree)
        try:
            work()
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 9), code
    return code == 0


def test_publish_a_directory_killed_at_every_step_leaves_the_old_or_the_new(tmp_path):
    out = tmp_path / "corpus"

    def build(version):
        def work():
            tmp = atomic.owned_path(str(out))
            os.makedirs(tmp)
            for i in range(3):
                with open(os.path.join(tmp, f"part-{i}.jsonl"), "w") as f:
                    f.write(f"{version} {i}\n")
            atomic.publish([(tmp, str(out))])

        return work

    def content():
        return {n: (out / n).read_text() for n in sorted(os.listdir(out))}

    build("old")()
    old = content()
    step, finished = 1, False
    while not finished:
        finished = kill_at_step(step, build("new"))
        atomic.remove_stale(str(tmp_path))  # what the next run does first
        assert content() in (old, {n: t.replace("old", "new") for n, t in old.items()}), step
        assert os.listdir(tmp_path) == ["corpus"], step
        if not finished:
            build("old")()  # back to the old corpus for the next step
        step += 1
    assert step > 4 and content()["part-0.jsonl"] == "new 0\n"


def test_write_atomic_out_of_space_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, capsys):
    path = tmp_path / "manifest.json"
    atomic.write_atomic(str(path), "old\n")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(OSError) as info:
        atomic.write_atomic(str(path), "new\n")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["manifest.json"]
    assert report_error(info.value) == 1
    assert capsys.readouterr().err == f"error: {path}: no space left on device\n"


def test_unwritable_output_is_found_before_the_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OSError) as info:
        atomic.check_writable_dir(str(blocker / "out"))
    assert info.value.filename == str(blocker / "out")
    atomic.check_writable_dir(str(tmp_path / "new" / "dir"))
    assert os.listdir(tmp_path / "new" / "dir") == []
