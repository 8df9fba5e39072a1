"""Process lifetime: a child that must not outlive the process that started it (training ranks under torchrun,
preprocessing workers) asks the kernel to signal it when its parent dies.

Imports nothing but the standard library: the tools arm `die_with_launcher` before their slow imports (torch,
megatron-core), the seconds in which a killed launcher used to leave its ranks running."""

import ctypes
import os
import signal
import sys
from typing import Optional

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGTERM, parent: Optional[int] = None) -> bool:
    """Deliver `sig` to this process when its parent exits (Linux; elsewhere a no-op returning False).

    The kernel tracks the parent *thread*, so call this from the main thread of a process whose parent outlives
    its own spawning thread (torchrun's agent, multiprocessing's pool). If the parent already died before the
    request took effect we are an orphan already: `sig` at once instead of running on. `parent`: the pid the
    parent gave us (os.getpid() there), which catches a parent that died while this process was still starting
    (a spawned worker imports for seconds before it gets here); without it, only a death from this call on."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid() if parent is None else parent
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # reparented before the request took effect
        os.kill(os.getpid(), sig)
    return True


# What a torchrun agent's command line holds (`torchrun ...`, `python -m torch.distributed.run ...`, the older
# `torch.distributed.launch`): the parent a rank must have while its launcher lives.
_LAUNCHER_MARKS = ("torchrun", "torch.distributed.run", "torch.distributed.launch", "torch/distributed/run.py")


def die_with_launcher() -> Optional[bool]:
    """Under torchrun, end this rank when torchrun dies; call it first thing in a tool, before the slow imports.

    torchrun starts each rank in a session of its own, so a `kill -9` of the launcher's process group never reaches
    the ranks: they trained on and kept committing checkpoints. SIGKILL, as the rank of a launcher that died
    abruptly has no one to report to (a torchrun that exits normally stops its ranks itself first), and a save it
    interrupts is never committed. A launcher that died before this call (the rank was reparented while Python
    started) is caught by checking that the parent is still a torchrun. Not without torchrun (None): a rank
    started from a shell must survive the shell (nohup)."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    armed = die_with_parent(signal.SIGKILL)
    if armed and not _is_launcher(os.getppid()):
        try:
            print("error: the torchrun that started this rank is gone; exiting", file=sys.stderr, flush=True)
        except OSError:
            pass  # its pipe went with it
        os.kill(os.getpid(), signal.SIGKILL)
    return armed


def _is_launcher(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return True  # cannot tell (no /proc, or the parent is gone this instant: the armed signal then comes)
    return any(mark in command for mark in _LAUNCHER_MARKS)
