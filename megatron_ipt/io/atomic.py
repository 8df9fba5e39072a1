"""Atomic outputs, and the leftovers of killed writers, in one place.

Every unfinished output carries its owner in its name: `{target}.{pid}@{host}.tmp` (a file or directory being
written, and any side file named after it), `{target}.{pid}@{host}.old` (a finished output moved aside while its
replacement goes in) and `{name}.{pid}@{host}.commit` (the list of targets a writer has begun to publish). A reader
therefore finds, under a final name, the old output or the complete new one, never a half-written one.

Publishing (`publish`) goes: every new file complete and flushed to disk; the commit record; the old outputs moved
aside (last target first); the new ones renamed in (first target first); the old ones deleted; the record deleted.
Publish first, delete after. A `.bin/.idx` pair published as [bin, idx] thus never shows a mismatched pair: the old
index disappears before the `.bin` changes and the new one appears after it (for the instant between those renames
no index is there, and no reader takes a lone `.bin` for a dataset).

`remove_stale` clears what a *dead* process left: only entries whose host is this host and whose pid no live
process has (a live job's files, another host's, or a pid reused since are left alone: at worst a leftover stays
until a later run). A dead writer that had committed is rolled forward (its complete new outputs are renamed in);
one that had not is rolled back (its temporary files are removed and nothing else is touched). `write_atomic` and
`publish` run it once per directory and process before their first write there, so every writer built on this
module (preprocess, build_corpus, synthesize, build-tasks, the tools' manifests) cleans up after killed runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
from collections import defaultdict
from typing import Iterable, List, Sequence, Tuple, Union

# An owned name, and anything named after it (the native builder's `X.tmp.lengths.part` side files).
_OWNED = re.compile(r"^(?P<target>.+?)\.(?P<pid>\d+)@(?P<host>[^@/]+?)\.(?P<kind>tmp|old|commit)(?P<side>\..*)?$")
_cleaned: set = set()  # directories this process already cleared of stale leftovers


def _tag(pid: int = None, host: str = None) -> str:
    return f"{os.getpid() if pid is None else pid}@{host or socket.gethostname()}"


def owned_path(target: str, kind: str = "tmp") -> str:
    """This process's temporary (`kind` "tmp") or moved-aside ("old") name for `target`."""
    return f"{target}.{_tag()}.{kind}"


def target_of(path: str) -> str:
    """The output an owned name (or a side file of one) stands for; other paths unchanged."""
    m = _OWNED.match(os.path.basename(path))
    return os.path.join(os.path.dirname(path), m["target"]) if m else path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_path(path: str) -> None:
    """Remove a file or directory tree; a missing one is fine."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    except FileNotFoundError:
        pass


def fsync_dir(directory: str) -> None:
    """Make the renames in `directory` durable (skipped where a directory cannot be opened or synced)."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DirLock:
    """An exclusive flock on the directory itself, so that two runs clearing one directory (Slurm array tasks
    writing next to each other) do not roll one dead writer forward twice; skipped where flock is refused."""

    def __init__(self, directory: str):
        self.fd = None
        try:
            self.fd = os.open(directory or ".", os.O_RDONLY)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # releases the lock


def remove_stale(directory: str) -> List[str]:
    """Clear, in `directory`, what dead processes on this host left (see the module docstring): a committed
    writer is rolled forward, anything else of theirs removed. Returns the names acted on."""
    directory = directory or "."
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    host = socket.gethostname()
    dead = defaultdict(list)  # tag → [(name, match)]
    alive = {}
    for name in names:
        m = _OWNED.match(name)
        if m is None or m["host"] != host:
            continue
        pid = int(m["pid"])
        if pid not in alive:
            alive[pid] = pid_alive(pid)
        if not alive[pid]:
            dead[f"{pid}@{host}"].append((name, m))
    if not dead:
        return []
    done = []
    with _DirLock(directory):
        for tag, entries in sorted(dead.items()):
            for name, m in entries:
                if m["kind"] == "commit" and not m["side"]:
                    try:
                        with open(os.path.join(directory, name), encoding="utf-8") as f:
                            targets = f.read().splitlines()
                    except FileNotFoundError:
                        continue  # another run finished it
                    _roll_forward(directory, tag, targets)
            for name, _ in sorted(entries, key=lambda e: e[1]["kind"] == "commit"):  # the record goes last
                remove_path(os.path.join(directory, name))
                done.append(name)
    return done


def clean_once(directory: str) -> None:
    """`remove_stale(directory)` the first time this process writes there."""
    key = os.path.abspath(directory)
    if key not in _cleaned:
        _cleaned.add(key)
        remove_stale(key)


def _roll_forward(directory: str, tag: str, targets: Sequence[str]) -> None:
    """Put in place, in order, every target of `targets` (names in `directory`) whose `.tmp` is still there;
    the outputs they replace are moved aside first (last target first) and deleted at the end. Idempotent: a
    run killed in here is finished by the next one."""
    paths = [os.path.join(directory, t) for t in targets]
    pending = [p for p in paths if os.path.lexists(f"{p}.{tag}.tmp")]
    for path in reversed(pending):
        if os.path.lexists(path):
            os.rename(path, f"{path}.{tag}.old")
    for path in pending:
        try:
            os.rename(f"{path}.{tag}.tmp", path)
        except FileNotFoundError:
            pass  # another run put it in
    fsync_dir(directory)
    for path in paths:
        remove_path(f"{path}.{tag}.old")
    remove_path(os.path.join(directory, f"{targets[0]}.{tag}.commit"))
    fsync_dir(directory)


def publish(pairs: Sequence[Tuple[str, str]]) -> None:
    """Publish finished temporary outputs [(owned_path(target), target)] of one directory together, in the order
    given (a `.bin/.idx` pair as [bin, idx]). The temporary files must be complete and flushed (`fsync_file`);
    from the commit record on, a run killed here is rolled forward by the next run's `remove_stale`."""
    targets = [os.path.abspath(target) for _, target in pairs]
    directory = os.path.dirname(targets[0])
    if any(os.path.dirname(t) != directory for t in targets):
        raise ValueError(f"publish: targets must share one directory: {targets}")
    for tmp, target in pairs:
        if tmp != owned_path(target):
            raise ValueError(f"publish: {tmp} is not this process's temporary name for {target}")
    names = [os.path.basename(t) for t in targets]
    fsync_dir(directory)  # the temporary files' names
    record = os.path.join(directory, f"{names[0]}.{_tag()}.commit")
    try:
        write_atomic(record, "".join(n + "\n" for n in names))
    except BaseException:  # not committed (no space for the record?): nothing of ours stays behind
        for tmp, _ in pairs:
            remove_path(tmp)
        raise
    _roll_forward(directory, _tag(), names)


@contextlib.contextmanager
def scratch_dir(base: str):
    """A working directory `owned_path(base)`, removed on exit; a killed run's goes with the next `remove_stale`."""
    path = owned_path(base)
    os.makedirs(path)
    try:
        yield path
    finally:
        remove_path(path)


def check_writable_dir(directory: str) -> None:
    """Create `directory` if needed and check, with a probe file, that files can be created in it: the tools
    call it before their work so that an unwritable output fails at once, not after hours. Raises the OSError,
    naming `directory`."""
    try:
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", directory)
        os.makedirs(directory, exist_ok=True)
        probe = owned_path(os.path.join(directory, ".write-check"))
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.remove(probe)
    except OSError as e:
        raise type(e)(e.errno, e.strerror, directory) from None


@contextlib.contextmanager
def naming(path: str):
    """Give an OSError without a file name (a failed write: "No space left on device") the output's name."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise type(e)(e.errno, e.strerror, path) from None
        raise


def write_atomic(path: str, content: Union[str, Iterable[str]]) -> str:
    """Write `content` (a string, or strings written one after another) to `path` atomically; returns `path`.
    On any failure (no space left, an interrupt) the temporary file is removed and `path` is untouched."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    clean_once(directory)
    tmp = owned_path(path)
    try:
        with naming(target_of(path)), open(tmp, "w", encoding="utf-8") as f:
            if isinstance(content, str):
                f.write(content)
            else:
                f.writelines(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_path(tmp)
        raise
    fsync_dir(directory)
    return path


def write_json_atomic(path: str, data, indent: int = 1) -> str:
    return write_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str, records: Iterable) -> str:
    return write_atomic(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in records))
