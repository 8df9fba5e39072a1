"""The files of a checkpoint directory, apart from what is in them: what may be unpickled, checksums, publishing a
save, and the lock that gives a `--save` directory one writer. checkpoint.py calls these; nothing else should.

Unpickling. megatron-core (0.16.1 to 0.19) loads through torch's DCP reader, which reads `.metadata` with
`pickle.load` and every bytes item (megatron's ShardedObjects: our RNG state, layers' `_extra_state`, 0.19's common
state) with `torch.load(weights_only=False)`; 0.16.1's `common.pt` goes through `torch.load`. Any of them can run
code. megatron-core offers no hook for its reader or planner, so `check_unpickling` reads each of those pickles
first, itself, with a restricted unpickler (`.metadata`: only the DCP metadata dataclasses, torch.Size, dtypes and
plain containers; bytes items and `common.pt`: torch's `weights_only` loader) and refuses the checkpoint on the first
pickle that names anything else. A pickle that passes can only rebuild allowed objects, whichever unpickler reads
it next, so megatron's own load of the same, unchanged files runs nothing. (A file rewritten between the check and
the load, by someone who can write the checkpoint directory while it is loaded, is outside what this guards.)

Checksums. At commit, `<iter>/checksums.sha256` lists the sha256 of every file of the save (sha256sum's format:
`cd iter_0000100 && sha256sum -c checksums.sha256` checks a copy by hand). Each rank hashes a share of the files (the
DCP files it wrote itself where it can, so from its page cache) and one all-gather brings the digests to rank 0;
at load each rank verifies a share and one all-gather agrees on the verdict. sha256 is hardware-accelerated
(SHA-NI) and runs at about 1.9 GB/s on one core here, as fast as the disk reads it.

Publishing. A save is written to `iter_N.tmp/`. When `iter_N/` already exists (a rerun of a finished job), it is
renamed to `iter_N.old/`, the new one renamed in, the tracker written, and only then `iter_N.old/` deleted: a kill
at any point leaves the tracker's iteration readable (`resolve` falls back to `iter_N.old/` while `iter_N/` is
absent) and `recover` (at the next start, under the lock) puts `iter_N.old/` back or deletes it.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import socket
import time
from typing import Dict, List, Optional, Tuple

import torch

from megatron_ipt.io.atomic import write_atomic
from megatron_ipt.training.errors import TrainingInputError

CHECKSUMS = "checksums.sha256"
LOCK = "megatron_ipt.lock"
ASIDE = ".old"  # iter_N.old: the committed iter_N while a re-save of N is published
_DCP_METADATA = ".metadata"
_COMMON = "common.pt"
_DCP_FILE = re.compile(r"__(\d+)_\d+\.distcp$")  # torch DCP's name for the files rank N writes

# What a DCP `.metadata` pickle may name: the dataclasses torch (2.x) and megatron-core (0.14 to 0.19) write there.
_METADATA_GLOBALS = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorProperties",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.distributed.checkpoint.planner": {
        "SavePlan",
        "WriteItem",
        "WriteItemType",
        "TensorWriteData",
        "LoadPlan",
        "ReadItem",
        "LoadItemType",
    },
    "megatron.core.dist_checkpointing.strategies.torch": {"MCoreMetadata", "MCoreSavePlan"},  # empty classes
    "torch": {"Size"},
    "torch.serialization": {"_get_layout"},  # looks a torch.layout up by name
    "collections": {"OrderedDict"},
    "builtins": {"set", "frozenset"},
    "pathlib": {"PosixPath", "PurePosixPath"},
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        allowed = name in _METADATA_GLOBALS.get(module, ()) or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        )
        if not allowed:
            raise pickle.UnpicklingError(f"names {module}.{name}, which a checkpoint's metadata never holds")
        return super().find_class(module, name)


def _refuse(path: str, error: BaseException) -> TrainingInputError:
    text = str(error)
    # torch's weights-only refusal opens with advice about torch.load; the global it refused is on a later line
    found = re.search(r"GLOBAL ([\w.]+)", text)
    reason = f"names {found.group(1)}" if found else (text.splitlines() or [type(error).__name__])[0]
    return TrainingInputError(
        f"{path}: refused, not a valid checkpoint file ({reason}); loading a checkpoint never runs code from it"
    )


def read_metadata(directory: str):
    """The DCP metadata of a checkpoint directory, through the restricted unpickler."""
    path = os.path.join(directory, _DCP_METADATA)
    try:
        with open(path, "rb") as f:
            return _MetadataUnpickler(f).load()
    except OSError as error:
        raise TrainingInputError(f"{path}: cannot read the checkpoint's metadata ({error.strerror or error})") from None
    except Exception as error:  # any unpickling failure: a truncated file, a forbidden class, garbage
        raise _refuse(path, error) from None


def _weights_only(path: str, data: bytes, what: str = "") -> Optional[str]:
    """None if `data` loads with torch's weights-only unpickler, else the one-line reason to refuse `path`."""
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:
        return str(_refuse(f"{path}{what}", error))
    return None


def check_unpickling(directory: str, metadata, rank: int, world: int) -> List[str]:
    """Read this rank's share of the checkpoint's bytes items (and, on rank 0, common.pt) with torch's weights-only
    loader; returns the one-line refusals (empty: all safe). `.metadata` itself is checked by `read_metadata`."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    problems = []
    if rank == 0 and os.path.exists(os.path.join(directory, _COMMON)):
        path = os.path.join(directory, _COMMON)
        with open(path, "rb") as f:
            problems.append(_weights_only(path, f.read()))
    byte_keys = {k for k, v in metadata.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata)}
    items = sorted(
        ((index.fqn, info) for index, info in metadata.storage_data.items() if index.fqn in byte_keys),
        key=lambda item: item[0],
    )
    for fqn, info in items[rank::world]:
        path = os.path.join(directory, info.relative_path)
        if os.path.dirname(os.path.normpath(info.relative_path)) or info.relative_path.startswith((".", "/")):
            problems.append(f"{os.path.join(directory, _DCP_METADATA)}: refused: item {fqn} lies outside {directory}")
            continue
        try:
            with open(path, "rb") as f:
                f.seek(info.offset)
                data = f.read(info.length)
        except OSError as error:
            problems.append(f"{path}: cannot read checkpoint item {fqn} ({error.strerror or error})")
            continue
        problems.append(_weights_only(path, data, f" (item {fqn})"))
    return [p for p in problems if p]


# ---- checksums ------------------------------------------------------------------------------------------------


def _files(directory: str) -> List[str]:
    """Every regular file under `directory`, relative, sorted; the checksum list itself excluded."""
    found = []
    for root, _, names in os.walk(directory):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), directory)
            if rel != CHECKSUMS:
                found.append(rel)
    return sorted(found)


def _share(names: List[str], directory: str, rank: int, world: int) -> List[str]:
    """This rank's part of `names`, the same split on every rank: a DCP file to the rank that wrote it (its page
    cache at save time), the rest greedily by size to the least-loaded rank."""
    load, owner = [0] * world, {}
    sized = []
    for name in names:
        match = _DCP_FILE.match(name)
        try:
            size = os.path.getsize(os.path.join(directory, name))
        except OSError:
            size = 0
        if match and int(match.group(1)) < world:
            owner[name] = int(match.group(1))
            load[owner[name]] += size
        else:
            sized.append((size, name))
    for size, name in sorted(sized, key=lambda s: (-s[0], s[1])):
        owner[name] = min(range(world), key=lambda r: (load[r], r))
        load[owner[name]] += size
    return [n for n in names if owner[n] == rank]


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _rank_world() -> Tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather(obj) -> list:
    """`obj` of every rank (one all-gather), or [obj] without a process group."""
    rank, world = _rank_world()
    if world == 1:
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def write_checksums(directory: str) -> None:
    """On every rank, once every rank has written `directory`: hash a share, gather, rank 0 writes the list."""
    rank, world = _rank_world()
    names = _files(directory)
    mine = {name: _sha256(os.path.join(directory, name)) for name in _share(names, directory, rank, world)}
    digests = {k: v for part in _gather(mine) for k, v in part.items()}
    if rank == 0:
        write_atomic(os.path.join(directory, CHECKSUMS), [f"{digests[n]}  {n}\n" for n in names])


def read_text(path: str, what: str) -> Optional[str]:
    """A small text file of a checkpoint directory (the tracker, the checksum list): None if it does not exist (an
    older or unfinished checkpoint), TrainingInputError naming it and `what` it is if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise TrainingInputError(f"{path}: cannot read {what} ({getattr(error, 'strerror', None) or error})") from None


def _read_checksums(directory: str) -> Optional[Dict[str, str]]:
    path = os.path.join(directory, CHECKSUMS)
    text = read_text(path, "the checksum list")
    if text is None:
        return None
    digests = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest) or os.path.isabs(name) or ".." in name.split("/"):
            raise TrainingInputError(f"{path}: line {number} is not '<sha256>  <file>': {line[:80]!r}")
        digests[name] = digest
    return digests


def _checksum_problems(directory: str, digests: Dict[str, str], rank: int, world: int) -> List[str]:
    listed = os.path.join(directory, CHECKSUMS)
    problems = []
    for name in _share(sorted(digests), directory, rank, world):
        path = os.path.join(directory, name)
        try:
            got = _sha256(path)
        except FileNotFoundError:
            problems.append(f"{path}: missing (listed in {listed})")
            continue
        except OSError as error:
            problems.append(f"{path}: cannot read ({error.strerror or error})")
            continue
        if got != digests[name]:
            problems.append(
                f"{path}: checksum mismatch (sha256 {got[:16]}..., {listed} records {digests[name][:16]}...): "
                f"the file is corrupt or was changed after the save"
            )
    return problems


_unverified_said = set()
_verified = {}  # directory -> its state when verified: converting reads one checkpoint three times


def _state(directory: str) -> tuple:
    return tuple((n, os.stat(os.path.join(directory, n)).st_mtime_ns) for n in sorted(os.listdir(directory)))


def verify(directory: str) -> object:
    """Check a checkpoint directory before megatron reads it: checksums (when the save recorded them), then that
    every pickle in it is one a load may read without running code. On every rank of the job, together (one
    all-gather). Raises TrainingInputError naming the first bad file; returns the DCP metadata."""
    rank, world = _rank_world()
    key = os.path.abspath(directory)
    if key in _verified and _verified[key][0] == _state(directory):
        return _verified[key][1]
    problems = []
    digests = _read_checksums(directory)
    if digests is None:
        if rank == 0 and directory not in _unverified_said:
            _unverified_said.add(directory)
            print(f"{directory} has no {CHECKSUMS} (saved before checksums were recorded): not verified", flush=True)
    else:
        problems += _checksum_problems(directory, digests, rank, world)
    metadata = None
    if not problems:  # a corrupt file named by its checksum first; the unpickling refusals only for intact files
        try:
            metadata = read_metadata(directory)
            problems += check_unpickling(directory, metadata, rank, world)
        except TrainingInputError as error:
            problems.append(str(error))
    everyone = [p for part in _gather(problems) for p in part]
    if everyone:
        raise TrainingInputError(everyone[0])
    _verified[key] = (_state(directory), metadata)
    return metadata


# ---- publishing a save, and what a kill leaves ---------------------------------------------------------------


def iteration_dir(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


def publish(tmp: str, final: str, write_tracker) -> None:
    """Rename the finished save `tmp` to `final` and commit it with `write_tracker()`, never deleting a committed
    directory before its replacement is in place (see the module doc)."""
    aside = final + ASIDE
    if os.path.isdir(final):
        if os.path.isdir(aside):  # both: a kill after the last publish had put the new one in
            shutil.rmtree(aside)
        os.replace(final, aside)
    os.replace(tmp, final)
    write_tracker()
    shutil.rmtree(aside, ignore_errors=True)


def resolve(root: str, iteration: int) -> Optional[str]:
    """The directory holding committed iteration `iteration`: `iter_N/`, or `iter_N.old/` while a re-save of N is
    being published (or was killed while it was); None if neither exists."""
    final = iteration_dir(root, iteration)
    for candidate in (final, final + ASIDE, final):  # again: the re-save may have just been renamed in
        if os.path.isdir(candidate):
            return candidate
    return None


def recover(save_dir: str) -> List[str]:
    """What killed saves left in `save_dir`, made whole; only by the holder of its lock, before it saves. Puts back an
    `iter_N.old/` whose replacement never arrived (else deletes it), deletes `*.tmp`. Returns what it did, in lines."""
    done = []
    for name in sorted(os.listdir(save_dir)):
        path = os.path.join(save_dir, name)
        if name.startswith("iter_") and name.endswith(ASIDE) and os.path.isdir(path):
            final = path[: -len(ASIDE)]
            if os.path.isdir(final):
                shutil.rmtree(path)
                done.append(f"removed {path}: the copy a finished re-save replaced")
            else:
                os.replace(path, final)
                done.append(f"restored {final} from {path}: its re-save never finished")
    for name in sorted(os.listdir(save_dir)):
        path = os.path.join(save_dir, name)
        if name.endswith(".tmp"):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            done.append(f"removed {path}: left by a save that never committed")
    return done


def committed_iterations(save_dir: str) -> List[str]:
    """The names `iter_NNNNNNN` in `save_dir` (no `.tmp`, no `.old`), in order."""
    return sorted(d for d in os.listdir(save_dir) if re.fullmatch(r"iter_\d{7}", d))


# ---- one writer per --save ------------------------------------------------------------------------------------


def _process_start(pid: int) -> Optional[float]:
    """The start time of a live process on this host, or None if there is none with that pid."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return -1.0  # alive, start unknown


def _owner_text(owner: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return f"host {owner.get('host')}, pid {owner.get('pid')}, started {started}"


def acquire_lock(save_dir: str) -> Optional[str]:
    """Make `save_dir` this process's: create it and its lock file (host, pid, start time). A lock of a live job
    (or of a job on another host) refuses with TrainingInputError naming its owner; the lock of a dead process on
    this host is taken over. Returns a line to print when it took one over."""
    import psutil

    path = os.path.join(save_dir, LOCK)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}
    try:
        os.makedirs(save_dir, exist_ok=True)
    except OSError as error:
        raise TrainingInputError(f"--save {save_dir}: cannot create it ({error.strerror or error})") from None
    note = None
    for _ in range(3):  # a second try after taking a stale lock over (and a third, should another job race us)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _read_lock(path)
            if owner and (owner.get("host"), owner.get("pid")) == (me["host"], me["pid"]):
                return note  # ours already (a second run in this process)
            note = _take_over_stale(path, me) or note
            continue
        except OSError as error:
            raise TrainingInputError(f"--save {save_dir}: cannot write there ({error.strerror or error})") from None
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
                f.write("\n")
        except OSError as error:
            with contextlib.suppress(OSError):
                os.remove(path)
            raise TrainingInputError(f"{path}: cannot write the lock ({error.strerror or error})") from None
        atexit.register(release_lock, save_dir)  # an error before the run's own release; a kill leaves it stale
        return note
    raise TrainingInputError(f"{path}: could not take the lock (another job keeps taking it)")


def _read_lock(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            owner = json.load(f)
        return owner if isinstance(owner, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # half-written by an owner killed while taking it


def _take_over_stale(path: str, me: dict) -> Optional[str]:
    """Remove the lock at `path` if its owner is a dead process on this host; refuse if it is alive or elsewhere."""
    owner = _read_lock(path)
    if owner is None:  # released meanwhile
        return None
    save_dir = os.path.dirname(path)
    if owner and owner.get("host") != me["host"]:
        raise TrainingInputError(
            f"--save {save_dir} is in use by another job ({_owner_text(owner)}; lock file {path}): give each job "
            f"its own --save, or delete the lock file if that job is gone"
        )
    pid = owner.get("pid")
    start = _process_start(pid) if isinstance(pid, int) else None
    if start is not None and (start == -1.0 or abs(start - owner.get("started", start)) < 1.0):
        raise TrainingInputError(
            f"--save {save_dir} is in use by another job ({_owner_text(owner)}; lock file {path}): two jobs must "
            f"not write one checkpoint directory; wait for it to end, or give this job its own --save"
        )
    # Dead (or its pid reused by another process). Rename it away, then check it was still that dead owner's
    # lock: a job racing us may have taken it over already, and must keep it.
    aside = f"{path}.stale-{me['pid']}"
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return None
    if _read_lock(aside) != owner:
        with contextlib.suppress(OSError):
            os.link(aside, path)  # put the live lock back (fails if yet another job holds the name)
        os.remove(aside)
        return None
    os.remove(aside)
    what = _owner_text(owner) if owner else "unreadable"
    return f"took over {path}: its owner ({what}) is no longer running"


def release_lock(save_dir: str) -> None:
    """Remove the lock if it is still this process's."""
    path = os.path.join(save_dir, LOCK)
    owner = _read_lock(path)
    if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        with contextlib.suppress(OSError):
            os.remove(path)
